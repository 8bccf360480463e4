"""TLS on the channel: contexts from the command line, and the TLS transport.

``TlsTransport`` wraps the channel socket in the standard library's
``ssl`` with non-blocking I/O and drives the handshake from the reactor
(``SSLWantReadError``/``SSLWantWriteError`` become selector interest).  The
channel above it does not change: ``send`` raises ``BlockingIOError`` until
the handshake is done and then ``write_ready`` lets the channel flush its
HELLO, so the handshake counts inside the channel's handshake timeout.  Reads
decrypt record after record into the session's receive buffer, and what
OpenSSL has already decrypted (``pending()``) is handed over without waiting
for the selector, which cannot see it.

The server side first peeks at the first byte.  A TLS client starts with a
handshake record (0x16); anything else is a plaintext reactor-mux client,
which is told in its own protocol that the server expects TLS.  A client
whose handshake meets a plaintext server's HELLO reports that the server did
not answer the handshake.  Verification failures say which check failed.

The client verifies the server by default: against ``--tls-ca`` or the
system's CAs (chain and name), or by pinning the SHA-256 of its certificate
(``--tls-fingerprint``), so a self-signed certificate needs no CA.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reactor_mux.netutil import describe_error, tune_channel_socket
from reactor_mux.protocol.session import error_frame
from reactor_mux.reactor import READ, WRITE, IOWatch, Reactor
from reactor_mux.transport import TransportError, TransportProtocol

log = logging.getLogger("reactor_mux")

TLS_RECORD_HANDSHAKE = 0x16
PLAINTEXT_TO_TLS_SERVER = "this server expects TLS (start the client with --tls)"

_HEX = re.compile(r"[0-9a-f]{64}")
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "UNKNOWN_PROTOCOL")  # fmt: skip
"""OpenSSL's reasons when what answered a ClientHello was not TLS at all."""
_ALERTS = ("TLSV1_ALERT_", "TLSV13_ALERT_", "SSLV3_ALERT_")


class TlsConfigError(ValueError):
    """TLS options that cannot be used (a missing file, a bad fingerprint)."""


def parse_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as lowercase hex, from hex with or without colons (as
    ``openssl x509 -noout -fingerprint -sha256`` prints it, prefix included)."""
    value = text.strip()
    if "=" in value:  # "sha256 Fingerprint=AB:CD:..."
        value = value.split("=", 1)[1]
    value = value.replace(":", "").lower()
    if not _HEX.fullmatch(value):
        raise TlsConfigError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits)")
    return value


def format_fingerprint(digest_hex: str) -> str:
    """``AB:CD:...``, as openssl prints it."""
    upper = digest_hex.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def certificate_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _context(purpose: ssl.Purpose) -> ssl.SSLContext:
    side = (
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    context = ssl.SSLContext(side)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load(action: str, path: Path, load: object) -> None:
    try:
        load()  # type: ignore[operator]
    except (OSError, ssl.SSLError) as exc:
        reason = describe_error(exc) if isinstance(exc, OSError) and exc.errno else str(exc)
        raise TlsConfigError(f"cannot load {action} {path}: {reason}") from None


@dataclass(frozen=True)
class ServerTls:
    """``--tls-cert``/``--tls-key``, and ``--tls-client-ca`` for mutual TLS."""

    context: ssl.SSLContext
    requires_client_certificate: bool

    @classmethod
    def from_files(cls, cert: Path, key: Path, client_ca: Path | None) -> ServerTls:
        context = _context(ssl.Purpose.CLIENT_AUTH)
        _load("certificate and key", cert, lambda: context.load_cert_chain(cert, key))
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            _load("client CA", client_ca, lambda: context.load_verify_locations(client_ca))
        return cls(context, client_ca is not None)


@dataclass(frozen=True)
class ClientTls:
    """``--tls`` and how the server is verified."""

    context: ssl.SSLContext
    server_name: str | None
    fingerprint: str | None
    insecure: bool

    @classmethod
    def from_options(
        cls,
        *,
        ca: Path | None,
        server_name: str | None,
        fingerprint: str | None,
        cert: Path | None,
        key: Path | None,
        insecure: bool,
    ) -> ClientTls:
        context = _context(ssl.Purpose.SERVER_AUTH)
        pinned = parse_fingerprint(fingerprint) if fingerprint is not None else None
        if pinned is not None or insecure:
            # The pin is checked after the handshake, against the certificate
            # itself; chain and name do not apply to a self-signed certificate.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca is not None:
            _load("CA", ca, lambda: context.load_verify_locations(ca))
        else:
            context.load_default_certs()
        if cert is not None:
            _load("client certificate and key", cert, lambda: context.load_cert_chain(cert, key))
        return cls(context, server_name, pinned, insecure)


def _describe_tls_error(exc: BaseException, server_side: bool) -> str:
    """One line saying which check failed, for the log of either side."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        who = "client" if server_side else "server"
        return f"TLS: the {who}'s certificate was not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if not server_side and reason in _NOT_TLS:
            return "server did not answer the TLS handshake (is it a plaintext server?)"
        if "CERTIFICATE_REQUIRED" in reason or "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason:
            return ("TLS: no client certificate, and the server requires one"
                    if not server_side else "TLS: the client sent no certificate")  # fmt: skip
        if reason.startswith(_ALERTS):
            alert = reason.split("ALERT_", 1)[1].lower().replace("_", " ")
            return (
                f"TLS: the {'client' if server_side else 'server'} refused the handshake: {alert}"
            )
        return f"TLS: {exc.reason or exc}".rstrip()
    if isinstance(exc, OSError):
        return f"TLS: {describe_error(exc)}"
    return f"TLS: {exc}"


class TlsTransport:
    """A channel over TLS on a TCP socket (either side)."""

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        keepalive_interval: float,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        tune_channel_socket(sock, keepalive_interval)
        self._reactor = reactor
        self._raw = sock
        # The selector watches the descriptor number: wrapping hands the same
        # descriptor from the plain socket object to the TLS one.
        self._fd = sock.fileno()
        self._context = context
        self._server_side = server_side
        self._server_hostname = server_hostname
        self._fingerprint = fingerprint
        self._tls: ssl.SSLSocket | None = None
        self._protocol: TransportProtocol | None = None
        self._watch: IOWatch | None = None
        self._state = "sniff" if server_side else "handshake"
        self._want_read = False
        self._want_write = False
        self._tls_wants: int = 0  # what OpenSSL itself is waiting for
        self._drain_scheduled = False
        self._received_any = False
        self.closed = False
        self.peer_certificate: bytes | None = None

    # ------------------------------------------------------------ Transport

    def attach(self, protocol: TransportProtocol) -> None:
        if self._protocol is not None:
            raise RuntimeError("transport already attached")
        self._protocol = protocol
        self._watch = IOWatch(self._reactor, self._fd, self._on_io, protocol)
        if self._state == "handshake":
            self._start_tls()
        self._update()

    def set_interest(self, read: bool, write: bool) -> None:
        self._want_read = read
        self._want_write = write
        if self._state == "open" and read and self._tls is not None and self._tls.pending():
            self._schedule_drain()
        self._update()

    def send(self, views: Sequence[memoryview]) -> int:
        if self._state != "open" or self._tls is None:
            raise BlockingIOError("TLS handshake in progress")
        total = 0
        for view in views:
            try:
                sent = self._tls.send(view)
            except ssl.SSLWantWriteError:
                self._tls_wants |= WRITE
                break
            except ssl.SSLWantReadError:
                self._tls_wants |= READ
                break
            except (ssl.SSLError, OSError) as exc:
                raise self._write_failure(exc) from None
            total += sent
            if sent < len(view):
                break
        if not total:
            self._update()
            raise BlockingIOError("TLS transport cannot take data now")
        return total

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._tls is not None and self._state == "open":
            try:  # close_notify, so the peer reads an orderly end; never waits
                self._tls.setblocking(False)
                self._tls.unwrap()
            except (OSError, ValueError):
                pass
        if self._watch is not None:
            self._watch.close()
        if self._tls is not None:
            self._tls.close()
        self._raw.close()

    # ------------------------------------------------------------- internals

    def _update(self) -> None:
        watch = self._watch
        if watch is None or self.closed:
            return
        if self._state == "sniff":
            mask = READ
        elif self._state == "handshake":
            mask = self._tls_wants or READ
        else:
            mask = self._tls_wants
            if self._want_read:
                mask |= READ
            if self._want_write:
                mask |= WRITE
        watch.want(mask)

    def _start_tls(self) -> None:
        self._tls = self._context.wrap_socket(
            self._raw,
            server_side=self._server_side,
            server_hostname=None if self._server_side else self._server_hostname,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=False,
        )
        self._state = "handshake"
        self._handshake()

    def _on_io(self, mask: int) -> None:
        if self._state == "sniff":
            self._sniff()
        elif self._state == "handshake":
            self._handshake()
        else:
            protocol = self._protocol
            assert protocol is not None
            wanted, self._tls_wants = self._tls_wants, 0
            if mask & WRITE and (self._want_write or wanted & WRITE):
                protocol.write_ready()
                if self.closed:
                    return
            if mask & READ and (self._want_read or wanted & READ):
                self._read()
                if wanted & READ and self._want_write and not self.closed:
                    protocol.write_ready()  # a write that waited for TLS to read
            self._update()

    def _write_failure(self, exc: BaseException) -> TransportError:
        """Why a write failed.  Under TLS 1.3 a client finishes its handshake before
        the server has checked its certificate, so a refusal shows up as the next
        write failing; the server's alert, if it arrived, says why."""
        tls = self._tls
        assert tls is not None
        try:
            tls.recv(1)
        except ssl.SSLError as alert:
            reason = (alert.reason or "").upper()
            if reason.startswith(_ALERTS) or "CERTIFICATE" in reason:
                return TransportError(_describe_tls_error(alert, self._server_side),
                                      authentication=True)  # fmt: skip
        except OSError:
            pass
        if not self._received_any:
            who = "client" if self._server_side else "server"
            return TransportError(f"TLS: the {who} closed the connection right after the "
                                  "handshake (did it refuse this side's certificate?)",
                                  authentication=True)  # fmt: skip
        return TransportError(
            f"channel write failed: {_describe_tls_error(exc, self._server_side)}"
        )

    def _fail(self, reason: str, *, authentication: bool = False) -> None:
        protocol = self._protocol
        assert protocol is not None
        protocol.transport_failed(reason, authentication=authentication)

    def _sniff(self) -> None:
        """Server: a TLS client opens with a handshake record; anything else is a
        plaintext client, told so in its own protocol."""
        try:
            first = self._raw.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(f"channel read failed: {describe_error(exc)}")
            return
        if not first:
            self._fail("peer closed the connection before the TLS handshake")
        elif first[0] == TLS_RECORD_HANDSHAKE:
            self._start_tls()
            self._update()
        else:
            try:
                self._raw.send(error_frame(PLAINTEXT_TO_TLS_SERVER))
            except OSError:
                pass
            self._fail("peer speaks plaintext; this server expects TLS (a client without --tls?)")

    def _handshake(self) -> None:
        tls = self._tls
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._tls_wants = READ
            self._update()
            return
        except ssl.SSLWantWriteError:
            self._tls_wants = WRITE
            self._update()
            return
        except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
            who = "client" if self._server_side else "server"
            self._fail(f"TLS: the {who} closed the connection during the handshake"
                       + ("" if self._server_side else " (is it a plaintext server?)"))  # fmt: skip
            return
        except (ssl.SSLError, OSError) as exc:
            # A refused certificate (either way) is a failed authentication: the
            # server slows the address down, the client stops retrying fast.
            refused = isinstance(exc, ssl.SSLError)
            self._fail(_describe_tls_error(exc, self._server_side), authentication=refused)
            return
        self._tls_wants = 0
        self.peer_certificate = tls.getpeercert(binary_form=True)
        if self._fingerprint is not None:
            got = certificate_fingerprint(self.peer_certificate or b"")
            if got != self._fingerprint:
                self._fail("TLS: the server's certificate does not match --tls-fingerprint "
                           f"(it is {format_fingerprint(got)})", authentication=True)  # fmt: skip
                return
        self._state = "open"
        protocol = self._protocol
        assert protocol is not None
        protocol.write_ready()  # the HELLO that waited for the handshake
        if not self.closed:
            if self._want_read:
                self._read()
            self._update()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and self._protocol is not None:
            self._drain_scheduled = True
            self._reactor.call_soon(self._drain, self._protocol)

    def _drain(self) -> None:
        self._drain_scheduled = False
        if not self.closed and self._state == "open" and self._want_read:
            self._read()
            self._update()

    def _read(self) -> None:
        """Decrypt record after record into the channel's buffer, then hand it over."""
        tls, protocol = self._tls, self._protocol
        assert tls is not None and protocol is not None
        buffer = protocol.get_buffer()
        filled = 0
        end = len(buffer)
        while filled < end:
            try:
                count = tls.recv_into(buffer[filled:])
            except ssl.SSLWantReadError:
                break
            except ssl.SSLWantWriteError:
                self._tls_wants |= WRITE
                break
            except ssl.SSLEOFError:
                if filled:
                    protocol.buffer_updated(filled)
                if not self.closed:
                    self._fail("the peer closed the connection without ending TLS")
                return
            except (ssl.SSLError, OSError) as exc:
                if filled:
                    protocol.buffer_updated(filled)
                if not self.closed:
                    alert = isinstance(exc, ssl.SSLError) and (exc.reason or "").startswith(_ALERTS)
                    self._fail(_describe_tls_error(exc, self._server_side)
                               if isinstance(exc, ssl.SSLError)
                               else f"channel read failed: {describe_error(exc)}",
                               authentication=alert and not self._received_any)  # fmt: skip
                return
            if count == 0:  # close_notify: an orderly end
                if filled:
                    protocol.buffer_updated(filled)
                if not self.closed:
                    protocol.eof_received()
                return
            filled += count
        if filled:
            self._received_any = True
            protocol.buffer_updated(filled)
        if not self.closed and self._want_read and tls.pending():
            self._schedule_drain()  # decrypted bytes the selector cannot see
