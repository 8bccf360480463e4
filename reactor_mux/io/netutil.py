"""Socket helpers shared by listeners, connectors and streams.

Every socket the tool creates goes through here, so options (non-blocking,
TCP_NODELAY, SO_REUSEADDR, RST-on-abort) are set the same way everywhere
and error text is turned into short, lowercase reasons for log lines and
SYN ERROR / BIND ERROR replies.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import struct
import termios
from typing import Any

from reactor_mux.protocol.failures import Failure, FailureClass

LISTEN_BACKLOG = 512

PeerAddress = tuple[Any, ...]
"""What ``accept()`` returns as the peer: (host, port) or (host, port, flow, scope)."""
_LINGER_ABORT = struct.pack("ii", 1, 0)


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tune_stream_socket(sock: socket.socket) -> None:
    """Non-blocking, no Nagle delay: we batch writes ourselves."""
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def tune_channel_socket(sock: socket.socket, keepalive_interval: float) -> None:
    """A channel socket: TCP keepalive too, so the kernel also probes a silent peer."""
    tune_stream_socket(sock)
    idle = max(1, int(keepalive_interval))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", idle), ("TCP_KEEPCNT", 3)):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        pass


_COUNT = struct.Struct("i")


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's send queue that its peer has not acknowledged
    (Linux's SIOCOUTQ); 0 where the system cannot say."""
    return _ioctl_count(sock, termios.TIOCOUTQ)


def _ioctl_count(sock: socket.socket, request: int) -> int:
    try:
        return int(_COUNT.unpack(fcntl.ioctl(sock.fileno(), request, bytes(4)))[0])
    except (OSError, AttributeError, ValueError):
        return 0


def abort_socket(sock: socket.socket) -> None:
    """Close with RST instead of FIN, so the local application sees a reset."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
    except OSError:
        pass
    sock.close()


CLOSE_DRAIN = 64 * 1024
"""Bytes a closing socket reads and drops first, so that what it sent last (an
ERROR saying why) is not lost to the reset that closing with unread bytes sends."""


def close_gently(sock: socket.socket) -> None:
    """Close a non-blocking socket after a FIN, reading away what the peer already
    sent (up to ``CLOSE_DRAIN``): the peer then reads our last words, then EOF."""
    try:
        sock.shutdown(socket.SHUT_WR)
        drained = 0
        while drained < CLOSE_DRAIN:
            chunk = sock.recv(16384)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:  # nothing more to read now, or the peer is gone
        pass
    sock.close()


def listen_socket(
    host: str, port: int, *, dual_stack: bool = False, udp: bool = False
) -> socket.socket:
    """A non-blocking listening TCP socket on host:port (host must be a literal), or
    with ``udp`` a bound UDP one; ``dual_stack`` lets an IPv6 socket take IPv4 too."""
    family = family_of(host)
    sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        if not udp:  # a UDP port must not be shared by accident
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind((host, port))
        if not udp:
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected, non-blocking TCP sockets on 127.0.0.1.

    Like ``socketpair()``, except that a reset (``abort_socket``) at one end
    arrives as a reset at the other, which a Unix socket cannot carry.  The
    accepted end is checked to be our own connection, not a local process
    that raced to the short-lived listener."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(2.0)
        ours = socket.create_connection(listener.getsockname(), timeout=2.0)
        try:
            while True:
                theirs, peer = listener.accept()
                if peer == ours.getsockname():
                    break
                abort_socket(theirs)
        except BaseException:
            ours.close()
            raise
    for sock in (ours, theirs):
        sock.settimeout(None)
        tune_stream_socket(sock)
    return ours, theirs


LOOPBACK_PAIR = ("127.0.0.1", "::1")
"""What ``localhost`` listens on."""

_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)
_PAIR_ATTEMPTS = 16
"""Tries at finding a port free on both 127.0.0.1 and ::1 for ``localhost:0``."""


class UnixPathInUse(OSError):
    """A Unix socket path that another process still answers on (or that is no socket)."""


def listen_unix(path: str, backlog: int = 128) -> socket.socket:
    """A non-blocking listening Unix socket at ``path``, mode 0600 from birth (others
    may not connect: OpenSSH's StreamLocalBindMask), replacing only a socket that
    nobody answers on any more (its process died), never another kind of file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise UnixPathInUse(errno.EEXIST, f"{path} exists and is not a socket")
        if info.st_uid != os.geteuid():
            raise UnixPathInUse(errno.EPERM, f"{path} is another user's socket")
        if unix_answers(path):
            raise UnixPathInUse(errno.EADDRINUSE, f"{path} is in use by another process")
        os.unlink(path)  # left behind by a process that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)  # born 0600: no moment where others may connect
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_mask)
    sock.setblocking(False)
    return sock


def unix_answers(path: str) -> bool:
    """Some process may still use the Unix socket at ``path``: only a refused connect
    proves it dead (a full backlog, a socket we may not connect to, a datagram
    socket such as /dev/log all have an owner).  The probe never waits (the server
    asks this inside its reactor)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        failure = probe.connect_ex(path)
    finally:
        probe.close()
    return failure not in (errno.ECONNREFUSED, errno.ENOENT)


def connect_unix(path: str) -> socket.socket:
    """A connected non-blocking Unix stream socket to ``path``: a local connect either
    completes at once or fails (EAGAIN, a full backlog, is a failure here)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def listen_sockets(host: str, port: int, *, udp: bool = False) -> list[socket.socket]:
    """Listening sockets (bound UDP ones with ``udp``) for ``host`` as ssh reads it:
    ``localhost`` is 127.0.0.1 and ::1 on one port, ``::`` is dual-stack (both
    families on one socket); IPv6 that the system does not have is left out, never
    an error."""
    if host == "::":
        try:
            return [listen_socket("::", port, dual_stack=True, udp=udp)]
        except OSError as exc:
            if exc.errno not in _NO_IPV6:
                raise
            return [listen_socket("0.0.0.0", port, udp=udp)]
    if host != "localhost":
        return [listen_socket(host, port, udp=udp)]
    for _ in range(_PAIR_ATTEMPTS):
        first = listen_socket(LOOPBACK_PAIR[0], port, udp=udp)
        try:
            return [first, listen_socket(LOOPBACK_PAIR[1], first.getsockname()[1], udp=udp)]
        except OSError as exc:
            if exc.errno in _NO_IPV6:
                return [first]
            first.close()
            if exc.errno != errno.EADDRINUSE or port != 0:
                raise
    raise OSError(errno.EADDRINUSE, "no port free on both 127.0.0.1 and ::1")


def describe_error(exc: BaseException | int) -> str:
    """A short lowercase reason: 'connection refused', 'address already in use'."""
    if isinstance(exc, int):
        code: int | None = exc
        text = os.strerror(exc)
    elif isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror or exc}".lower()
    elif isinstance(exc, OSError) and exc.errno is not None:
        code = exc.errno
        text = exc.strerror or os.strerror(exc.errno)
    else:
        code = None
        text = str(exc) or type(exc).__name__
    if code == errno.ETIMEDOUT:
        text = "timed out"
    if text[1:2].isupper():  # an acronym ("AF_UNIX path too long") keeps its case
        return text
    return text[:1].lower() + text[1:]


_FAILURE_OF_ERRNO = {
    errno.ECONNREFUSED: FailureClass.REFUSED,
    errno.ECONNRESET: FailureClass.REFUSED,
    errno.EHOSTUNREACH: FailureClass.UNREACHABLE,
    errno.EHOSTDOWN: FailureClass.UNREACHABLE,
    errno.ENETUNREACH: FailureClass.NETWORK,
    errno.ENETDOWN: FailureClass.NETWORK,
    errno.ETIMEDOUT: FailureClass.TIMEOUT,
    errno.EMFILE: FailureClass.LIMIT,
    errno.ENFILE: FailureClass.LIMIT,
}


def connect_failure(exc: BaseException | int) -> Failure:
    """A failed connect (or lookup) as its class, by errno, and its words."""
    if isinstance(exc, socket.gaierror):
        return Failure(FailureClass.UNRESOLVED, describe_error(exc))
    code = exc if isinstance(exc, int) else getattr(exc, "errno", None)
    return Failure(_FAILURE_OF_ERRNO.get(code, FailureClass.FAILED) if code is not None
                   else FailureClass.FAILED, describe_error(exc))  # fmt: skip


def sockname(sock: socket.socket) -> tuple[str, int]:
    address = sock.getsockname()
    return address[0], address[1]
