"""A bounded byte ring that hands out memoryviews of its contents.

A stream keeps here what its local socket would not take yet; the socket
``sendmsg``s the contents straight from the views.  Storage is allocated lazily and grows by
doubling up to ``limit``: an idle stream costs nothing, a bulk one at most
``limit`` bytes.  Growth allocates a new array instead of resizing, so views
already handed out stay valid (they keep the old array alive).
"""

from __future__ import annotations

INITIAL_CAPACITY = 16 * 1024


class RingBuffer:
    """FIFO of at most ``limit`` bytes over a circular bytearray."""

    __slots__ = ("_buffer", "_head", "_view", "limit", "size")

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self.limit = limit
        self._buffer = bytearray()
        self._view = memoryview(self._buffer)
        self._head = 0
        self.size = 0
        """Bytes held (``len()`` says the same, with a call the hot paths avoid)."""

    def __len__(self) -> int:
        return self.size

    @property
    def capacity(self) -> int:
        """Bytes currently allocated (grows toward ``limit``)."""
        return len(self._buffer)

    def _reserve(self, needed: int) -> None:
        capacity = len(self._buffer)
        if needed <= capacity:
            return
        new_capacity = max(INITIAL_CAPACITY, capacity)
        while new_capacity < needed:
            new_capacity *= 2
        new_capacity = min(new_capacity, self.limit)
        new = bytearray(new_capacity)
        size = self.size
        first = min(size, capacity - self._head)
        new[:first] = self._view[self._head : self._head + first]
        new[first:size] = self._view[: size - first]
        self._buffer = new
        self._view = memoryview(new)
        self._head = 0

    def _writable_views(self, count: int) -> list[memoryview]:
        """Return views of the next ``count`` free bytes (one or two pieces)."""
        if count <= 0:
            return []
        if count > self.limit - self.size:
            raise ValueError("ring buffer overflow")
        self._reserve(self.size + count)
        capacity = len(self._buffer)
        tail = (self._head + self.size) % capacity
        first = min(count, capacity - tail)
        views = [self._view[tail : tail + first]]
        if first < count:
            views.append(self._view[: count - first])
        return views

    def write(self, data: bytes | memoryview) -> None:
        """Copy ``data`` in; it must fit."""
        count = len(data)
        offset = 0
        for view in self._writable_views(count):
            view[:] = data[offset : offset + len(view)]
            offset += len(view)
        self.size += count

    def peek(self, offset: int, count: int) -> list[memoryview]:
        """Return views of ``count`` bytes starting ``offset`` bytes into the ring."""
        if offset + count > self.size:
            raise ValueError("peek beyond the buffered bytes")
        if count <= 0:
            return []
        capacity = len(self._buffer)
        start = (self._head + offset) % capacity
        first = min(count, capacity - start)
        views = [self._view[start : start + first]]
        if first < count:
            views.append(self._view[: count - first])
        return views

    def consume(self, count: int) -> None:
        """Drop ``count`` bytes from the front (the storage stays for reuse)."""
        if count > self.size:
            raise ValueError("consume beyond the buffered bytes")
        self.size -= count
        if self.size == 0:
            self._head = 0
        else:
            self._head = (self._head + count) % len(self._buffer)

    def release(self) -> int:
        """Free the storage of an empty ring (it starts small again); returns the
        bytes freed, 0 if the ring holds data."""
        if self.size:
            return 0
        released = len(self._buffer)
        self._buffer = bytearray()
        self._view = memoryview(self._buffer)
        self._head = 0
        return released
