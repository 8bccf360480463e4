"""Slowing down repeated authentication failures from one address.

Each failure from an address doubles how long new channels from it are
turned away at once (from ``FIRST_PENALTY`` up to ``MAX_PENALTY``); a
success forgets the address.  The table is bounded (``MAX_TRACKED``
addresses, least recently failed dropped first), so a flood from many
addresses costs a fixed amount of memory, and a refused connection costs
the server an accept and a close: no handshake, no HMAC, no log line beyond
the first of each episode.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

FIRST_PENALTY = 1.0
"""Seconds an address is turned away after its first failure."""
MAX_PENALTY = 60.0
"""The longest an address is turned away."""
MAX_TRACKED = 4096
"""Addresses remembered at once: at most a few hundred KiB."""


@dataclass
class _Record:
    failures: int
    until: float
    told: bool  # its refusal has been logged this episode


class FailureLimiter:
    def __init__(
        self,
        first: float = FIRST_PENALTY,
        maximum: float = MAX_PENALTY,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self._first = first
        self._maximum = maximum
        self._max_tracked = max_tracked
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def failed(self, address: str, now: float) -> float:
        """Count a failure; return how long ``address`` is now turned away."""
        record = self._records.pop(address, None)
        failures = 1 if record is None else record.failures + 1
        penalty = min(self._maximum, self._first * (1 << min(failures - 1, 32)))
        self._records[address] = _Record(failures, now + penalty, told=False)
        while len(self._records) > self._max_tracked:
            self._records.popitem(last=False)
        return penalty

    def succeeded(self, address: str) -> None:
        self._records.pop(address, None)

    def refuse(self, address: str, now: float) -> tuple[bool, bool]:
        """``(refuse, log)``: whether a new channel from ``address`` is turned
        away, and whether this is the first refusal of the episode to log."""
        record = self._records.get(address)
        if record is None or now >= record.until:
            return False, False
        first = not record.told
        record.told = True
        return True, first
