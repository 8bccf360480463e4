"""A TLS channel's records in C: the data plane takes over Python's TLS session.

Python's ``ssl`` makes the session (handshake, certificate and pin checks, the
errors a refusal reports: io/tls.py, unchanged).  Once it is open, the data
plane reads and writes the channel itself through the very same OpenSSL
objects (csrc/rmux_tls.c), so a TLS channel costs one C call per wake-up like a
plain one, and Python's path, which still runs whenever the plane hands the
channel back, works on the same state.

The OpenSSL objects are found where CPython keeps them: an ``_ssl._SSLSocket``
holds its ``SSL *`` right after the object header and a weak reference, an
``_ssl.MemoryBIO`` its ``BIO *`` right after the header (Modules/_ssl.c, the
same layout from 3.10 to 3.14).  That is checked three ways before the plane
uses them: only on CPython versions known to have that layout (and not the
free-threaded build, whose header differs), only where the C side found
OpenSSL's functions in the library ``_ssl`` itself uses, and only when OpenSSL
confirms that the session's BIOs are the two Python gave it.  Anywhere else,
wherever the data plane is not in use, and with ``REACTOR_MUX_TLS=python``, TLS
records stay on Python's path.
"""

from __future__ import annotations

import errno
import os
import ssl
import sys
import sysconfig
import threading
from functools import cache

from reactor_mux.io import plane as data_plane

try:
    from reactor_mux.codec._ccodec import ffi, lib  # type: ignore[import-not-found]
except ImportError:  # no compiler at install time
    ffi = lib = None

POLICY_VARIABLE = "REACTOR_MUX_TLS"
"""``python`` keeps a TLS channel's records on Python's path (for comparison)."""

PREFERRED_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
"""TLS 1.3 suites in the order the plane's sessions ask for: AES-128-GCM first,
the cipher ssh uses, which costs less per byte than the AES-256-GCM OpenSSL
puts first (Python's ssl cannot reorder TLS 1.3 suites)."""

_KNOWN_LAYOUTS = ((3, 10), (3, 11), (3, 12), (3, 13), (3, 14))
_POINTER = ffi.sizeof("void *") if ffi is not None else 8
_HEADER = object.__basicsize__
"""PyObject_HEAD's size: where the first field of every _ssl object starts."""


_BIND_LOCK = threading.Lock()


def available() -> bool:
    """Whether this process can hand TLS sessions to the data plane (which it
    uses: not with the pure-Python codec or REACTOR_MUX_DATA_PLANE=python).
    Decided once, under a lock: two reactors' threads may ask at once."""
    with _BIND_LOCK:
        return _decide()


@cache
def _decide() -> bool:
    if lib is None or os.environ.get(POLICY_VARIABLE, "").strip().lower() == "python":
        return False
    if not data_plane.enabled():
        return False
    if sys.implementation.name != "cpython" or sys.version_info[:2] not in _KNOWN_LAYOUTS:
        return False
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return False
    import _ssl

    path = getattr(_ssl, "__file__", None)
    return path is not None and lib.rmux_tls_bind(os.fsencode(path)) == 0


def _field(obj: object, index: int) -> int:
    """The pointer-sized field ``index`` after ``obj``'s header (CPython's layout)."""
    if type(obj).__basicsize__ < _HEADER + (index + 1) * _POINTER:
        return 0
    address: int = ffi.cast("uintptr_t *", id(obj) + _HEADER + index * _POINTER)[0]
    return address


def session_of(tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> int:
    """The address of ``tls``'s OpenSSL session for the plane, or 0 where it must
    stay on Python's path."""
    if not available():
        return 0
    inner = getattr(tls, "_sslobj", None)
    if inner is None:
        return 0
    session = _field(inner, 1)  # after the weak reference to a socket (None here)
    rbio, wbio = _field(incoming, 0), _field(outgoing, 0)
    return session if lib.rmux_tls_adopt(session, rbio, wbio) else 0


def prefer_aes128(session: int) -> None:
    """Ask for AES-128-GCM first (before the handshake; both sides do)."""
    lib.rmux_tls_set_ciphersuites(session, PREFERRED_SUITES.encode())


def own_output(session: int) -> None:
    """Once the handshake is done: the session's records go to the plane's own
    buffer rather than the memory BIO (one copy fewer; see rmux_tls.h)."""
    lib.rmux_tls_own_output(session)


def own_input(session: int, ended: bool) -> bool:
    """Once the handshake is done: the session's ciphertext is received into the
    plane's own buffer (``ended``: the socket already ended); False where it
    stays with the memory BIO."""
    return bool(lib.rmux_tls_own_input(session, ended))


def take_in(session: int, fd: int) -> int | None:
    """One read of ``fd`` into the session's own input: the count, 0 at the
    socket's end, None if nothing came; raises ``OSError`` if the socket failed."""
    count: int = lib.rmux_tls_take_in(session, fd)
    if count >= 0:
        return count
    if -count in (errno.EAGAIN, errno.EWOULDBLOCK):
        return None
    raise OSError(-count, os.strerror(-count))


def held_in(session: int) -> int:
    held: int = lib.rmux_tls_held_in(session)
    return held


def input_ended(session: int) -> bool:
    return bool(lib.rmux_tls_input_ended(session))


def release(session: int) -> None:
    """The transport closed: free the plane's cipher buffers now, not when the
    session object is collected (they hold up to 256 KiB each way)."""
    lib.rmux_tls_release(session)


def release_idle(session: int) -> None:
    """A quiet channel: free the plane's cipher buffers where they hold nothing."""
    lib.rmux_tls_release_idle(session)


def cipher(session: int) -> str:
    name: bytes = ffi.string(lib.rmux_tls_cipher(session))
    return name.decode()


def flush(session: int, fd: int) -> int:
    """Send the session's ciphertext to ``fd`` as far as it takes it now (the
    rest stays first in line); raises ``OSError`` if the socket failed."""
    sent: int = lib.rmux_tls_flush(session, fd)
    if sent < 0:
        raise OSError(-sent, os.strerror(-sent))
    return sent


def unsent(session: int) -> int:
    count: int = lib.rmux_tls_unsent(session)
    return count


def reason(code: int) -> str:
    """OpenSSL's reason for an error code, as ``ssl.SSLError.reason`` spells it."""
    text: bytes = ffi.string(lib.rmux_tls_reason(code))
    return text.decode(errors="replace").upper().replace(" ", "_")
