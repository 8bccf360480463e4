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

import enum
import hashlib
import logging
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from reactor_mux.io import nativetls
from reactor_mux.io.netutil import close_gently, describe_error, tune_channel_socket
from reactor_mux.io.reactor import READ, WRITE, IOWatch, Reactor
from reactor_mux.io.transport import TransportError, TransportProtocol
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.session import error_frame

log = logging.getLogger("reactor_mux")

TLS_RECORD_HANDSHAKE = 0x16
PLAINTEXT_TO_TLS_SERVER = "this server expects TLS (start the client with --tls)"

CIPHER_READ = 256 * 1024
"""Most ciphertext taken from the socket per readiness event."""

CIPHER_READ_INITIAL = 4 * 1024
"""What a connection reads ciphertext into at first: enough for a handshake or an
idle channel; a read that fills it doubles it, up to ``CIPHER_READ``."""

TLS_SEND_BACKLOG = 256 * 1024
"""Encrypted bytes the transport holds for a slow socket before it refuses more
plaintext (BlockingIOError): the channel's output waits in its own bounded FIFO."""

STRANGER_SEND_BACKLOG = 16 * 1024
"""The same until the peer has proved itself (``trust``): a stranger that never
reads holds this much, and then the session's small reply backlog cuts it off."""

_HEX = re.compile(r"[0-9a-f]{64}")
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "UNKNOWN_PROTOCOL")  # fmt: skip
"""OpenSSL's reasons when what answered a ClientHello was not TLS at all."""
_ALERTS = ("TLSV1_ALERT_", "TLSV13_ALERT_", "SSLV3_ALERT_")


class TlsPhase(enum.Enum):
    """Where a TLS transport is: reading a server's first byte (TLS or not?), in the
    handshake, or carrying the channel's bytes."""

    SNIFF = "sniff"
    HANDSHAKE = "handshake"
    OPEN = "open"


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


def self_signed_fingerprint(host: str, port: int, timeout: float) -> str | None:
    """The fingerprint (``AB:CD:...``) of the certificate the server at host:port
    shows, if it signed it itself (as ``reactor-mux keygen`` makes them); None for
    any other certificate, or when it cannot be fetched.  For the line that tells a
    client refusing it what to pin: a second connection, made only then, blocking."""
    from cryptography import x509  # loaded only on this path

    try:
        pem = ssl.get_server_certificate((host, port), timeout=timeout)
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except (OSError, ValueError):
        return None
    if certificate.issuer != certificate.subject:
        return None
    return format_fingerprint(certificate_fingerprint(ssl.PEM_cert_to_DER_cert(pem)))


def _context(purpose: ssl.Purpose) -> ssl.SSLContext:
    side = (
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    context = ssl.SSLContext(side)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _check_pair(cert: Path, key: Path | None) -> None:
    """Say which file is which before OpenSSL's "PEM lib": a certificate where the key
    belongs (or the reverse, or both swapped) is named as such.  Without ``key`` the
    certificate's file holds both."""
    try:
        cert_text = cert.read_bytes()
        key_text = cert_text if key is None else key.read_bytes()
    except OSError:
        return  # load_cert_chain says why it cannot read them
    cert_is_cert, key_is_key = b"CERTIFICATE-----" in cert_text, b"PRIVATE KEY-----" in key_text
    if not cert_is_cert and not key_is_key and b"PRIVATE KEY-----" in cert_text:
        raise TlsConfigError(f"--tls-cert {cert} holds a private key and --tls-key {key} a "
                             "certificate: give them the other way round")  # fmt: skip
    if not cert_is_cert:
        raise TlsConfigError(f"--tls-cert {cert} holds no certificate "
                             "(-----BEGIN CERTIFICATE-----)")  # fmt: skip
    if not key_is_key:
        raise TlsConfigError(f"--tls-key {key or cert} holds no private key "
                             "(-----BEGIN PRIVATE KEY-----)")  # fmt: skip


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
        _check_pair(cert, key)
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
            _check_pair(cert, key)
            _load("client certificate and key", cert, lambda: context.load_cert_chain(cert, key))
        return cls(context, server_name, pinned, insecure)


_CERTIFICATE_ALERTS = ("CERTIFICATE", "UNKNOWN_CA")
"""In OpenSSL's code for an alert from the peer: it refused our certificate."""
_EOF_CODES = ("UNEXPECTED_EOF_WHILE_READING", "EOF_IN_HANDSHAKE")


def tls_failure_code(exc: ssl.SSLError, server_side: bool) -> ErrorCode:
    """What a failed TLS handshake was, by OpenSSL's reason code (not our words):
    a refused certificate is an authentication failure, but only the certificate
    the *client* has to show (a client refusing the server's certificate is the
    server's problem, not a stranger's offence); a connection cut mid-handshake
    is a peer that went away; anything else (garbage, no shared cipher) is TLS."""
    openssl_code = (exc.reason or "").upper()
    if openssl_code in _EOF_CODES or isinstance(exc, ssl.SSLEOFError):
        return ErrorCode.PEER_CLOSED
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ErrorCode.AUTH_FAILED  # we checked the peer's certificate and refused it
    from_peer = openssl_code.startswith(_ALERTS)
    if server_side:  # the client showed no certificate, where one is required
        refused = not from_peer and ("PEER_DID_NOT_RETURN_A_CERTIFICATE" in openssl_code
                                     or openssl_code.endswith("CERTIFICATE_REQUIRED"))  # fmt: skip
    else:  # the server refused the certificate we showed (or that we showed none)
        refused = from_peer and any(word in openssl_code for word in _CERTIFICATE_ALERTS)
    return ErrorCode.AUTH_FAILED if refused else ErrorCode.TLS


def _describe_tls_error(exc: BaseException, server_side: bool, in_session: bool = False) -> str:
    """One line saying which check failed, for the log of either side."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        who = "client" if server_side else "server"
        return f"TLS: the {who}'s certificate was not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        openssl_code = (exc.reason or "").upper()
        if not server_side and openssl_code in _NOT_TLS:
            return "server did not answer the TLS handshake (is it a plaintext server?)"
        if "CERTIFICATE_REQUIRED" in openssl_code or (
            "PEER_DID_NOT_RETURN_A_CERTIFICATE" in openssl_code
        ):
            return ("TLS: no client certificate, and the server requires one"
                    if not server_side else "TLS: the client sent no certificate")  # fmt: skip
        if openssl_code.startswith(_ALERTS):
            return describe_tls_reason(openssl_code, server_side, in_session=in_session)
        return f"TLS: {exc.reason or exc}".rstrip()
    if isinstance(exc, OSError):
        return f"TLS: {describe_error(exc)}"
    return f"TLS: {exc}"


def describe_tls_reason(openssl_code: str, server_side: bool, *, in_session: bool) -> str:
    """One line for a TLS failure by OpenSSL's reason code.  An alert from the
    peer refused the handshake unless the session already carried data
    (``in_session``: then the peer ended it, a damaged record say)."""
    if openssl_code.startswith(_ALERTS):
        alert = openssl_code.split("ALERT_", 1)[1].lower().replace("_", " ")
        peer = "client" if server_side else "server"
        if in_session:
            return f"TLS: the {peer} ended the session with an alert: {alert}"
        return f"TLS: the {peer} refused the handshake: {alert}"
    return f"TLS: {openssl_code or 'a failure in the TLS library'}"


class TlsTransport:
    """A channel over TLS on a TCP socket (either side).

    OpenSSL works on memory buffers (``SSLObject`` over two ``MemoryBIO``s) and
    this class moves the ciphertext itself: one ``recv_into`` of up to
    ``CIPHER_READ`` bytes feeds as many records as arrived, and everything the
    channel sends in a tick is encrypted and leaves in one ``send``.  (A TLS
    socket would read each record's header and body with separate system
    calls and write each 16 KiB record with one of its own.)
    """

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
        route_hint: str | None = None,
    ) -> None:
        """``route_hint``: an ALPN value a client offers for the server's workers to
        route by (``routehint``); the server never selects it."""
        tune_channel_socket(sock, keepalive_interval)
        self._reactor = reactor
        self._sock = sock
        self._context = context
        self._server_side = server_side
        self._server_hostname = server_hostname
        self._fingerprint = fingerprint
        self._route_hint = route_hint
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls: ssl.SSLObject | None = None
        self._session = 0  # the OpenSSL session, where the data plane can drive it (nativetls)
        self._own_input = False  # its ciphertext is received into the plane's buffer
        self._cipher_in = bytearray(CIPHER_READ_INITIAL)
        self._cipher_out = bytearray()  # encrypted, not yet taken by the socket
        self._protocol: TransportProtocol | None = None
        self._watch: IOWatch | None = None
        self._phase = TlsPhase.SNIFF if server_side else TlsPhase.HANDSHAKE
        self._want_read = False
        self._want_write = False
        self._peer_eof = False
        self._drain_scheduled = False
        self._received_any = False
        self._trusted = False
        self._send_backlog = STRANGER_SEND_BACKLOG
        self.closed = False
        self.peer_certificate: bytes | None = None

    # ------------------------------------------------------------ Transport

    def attach(self, protocol: TransportProtocol) -> None:
        if self._protocol is not None:
            raise RuntimeError("transport already attached")
        self._protocol = protocol
        self._watch = IOWatch(self._reactor, self._sock, self._on_io, protocol)
        if self._phase is TlsPhase.HANDSHAKE:
            try:
                self._start_tls()  # a client speaks first: its ClientHello goes out now
            except OSError as exc:  # the connection was reset before we said a word
                reason = f"TLS: {describe_error(exc)}"
                self._reactor.call_soon(lambda: self._fail(reason, code=ErrorCode.PEER_CLOSED),
                                        protocol)  # fmt: skip
                return
        self._update()

    def handover(self, protocol: TransportProtocol) -> None:
        if self._watch is None:
            raise RuntimeError("transport not attached")
        self._protocol = protocol
        self._watch.owner = protocol

    def set_interest(self, read: bool, write: bool) -> None:
        self._want_read = read
        self._want_write = write
        if read and self._phase is TlsPhase.OPEN and self._plaintext_waiting():
            self._schedule_drain()
        self._update()

    def release_idle(self) -> None:
        if self.closed or self._phase is not TlsPhase.OPEN:
            return
        if self._own_input:
            nativetls.release_idle(self._session)
        elif len(self._cipher_in) > CIPHER_READ_INITIAL:
            self._cipher_in = bytearray()  # a burst's: taken again, small, at the next read

    def plane_socket(self) -> tuple[int, int]:
        # Not once Python has read the socket's end: what is left is Python's to tell.
        if (
            self._session
            and self._phase is TlsPhase.OPEN
            and not self.closed
            and not self._peer_eof
        ):
            return self._sock.fileno(), self._session
        return -1, 0

    def plane_failure(self, code: int) -> str:
        # The plane reads only a channel that is open: the session carried data.
        return describe_tls_reason(nativetls.reason(code), self._server_side, in_session=True)

    def trust(self) -> None:
        self._trusted = True
        self._send_backlog = TLS_SEND_BACKLOG
        if self._phase is TlsPhase.OPEN:
            self._take_own_input()

    def _take_own_input(self) -> None:
        """A trusted session's ciphertext is received into the plane's buffer,
        which grows with a busy channel as ``_cipher_in`` would (a stranger's
        stays at ``CIPHER_READ_INITIAL``: it is taken only once trusted)."""
        if self._session and not self._own_input and not self.closed:
            self._own_input = nativetls.own_input(self._session, self._peer_eof)
            if self._own_input:
                self._cipher_in = bytearray()  # not read into any more

    @property
    def established(self) -> bool:
        """The TLS handshake is done: the channel's bytes may flow."""
        return self._phase is TlsPhase.OPEN

    def send(self, views: Sequence[memoryview]) -> int:
        tls = self._tls
        if self._phase is not TlsPhase.OPEN or tls is None:
            raise BlockingIOError("TLS handshake in progress")
        backlog = self._send_backlog
        if self._cipher_waiting() >= backlog:
            self._flush_cipher()
            if self._cipher_waiting() >= backlog:
                raise BlockingIOError("TLS transport is still sending")
        total = 0
        try:
            for view in views:
                total += tls.write(view)  # into memory: takes everything
        except ssl.SSLError as exc:
            raise TransportError(_describe_tls_error(exc, self._server_side)) from None
        self._flush_cipher()
        return total

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._tls is not None and self._phase is TlsPhase.OPEN:
            try:  # close_notify, so the peer reads an orderly end; never waits
                self._tls.unwrap()
            except (ssl.SSLError, ValueError):
                pass
            try:
                self._flush_cipher()
            except OSError:
                pass
        if self._watch is not None:
            self._watch.close()
        close_gently(self._sock)
        self._cipher_in = bytearray()  # nothing large waits for the garbage collector
        if self._session:
            nativetls.release(self._session)  # nor the plane's cipher buffers

    # ------------------------------------------------------------- internals

    def _update(self) -> None:
        watch = self._watch
        if watch is None or self.closed:
            return
        mask = 0 if self._peer_eof else READ
        if self._phase is TlsPhase.OPEN and not self._want_read:
            mask = 0
        if self._cipher_waiting() or (self._phase is TlsPhase.OPEN and self._want_write):
            mask |= WRITE
        watch.want(mask)

    def _cipher_waiting(self) -> int:
        """Encrypted bytes not yet taken by the socket."""
        if self._session:
            return nativetls.unsent(self._session)
        return len(self._cipher_out) + self._outgoing.pending

    def _plaintext_waiting(self) -> bool:
        tls = self._tls
        return tls is not None and (self._cipher_held() > 0 or tls.pending() > 0)

    def _cipher_held(self) -> int:
        """Ciphertext received and not yet read by OpenSSL."""
        if self._own_input:
            return nativetls.held_in(self._session)
        return self._incoming.pending

    def _cipher_ended(self) -> bool:
        """The socket ended and OpenSSL has read everything before the end."""
        if self._own_input:
            return nativetls.input_ended(self._session)
        return self._incoming.eof

    def _start_tls(self) -> None:
        if not self._server_side:  # the context is the client's, one connection at a time
            self._context.set_alpn_protocols([self._route_hint] if self._route_hint else [])
        self._tls = self._context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=self._server_side,
            server_hostname=None if self._server_side else self._server_hostname,
        )
        self._session = nativetls.session_of(self._tls, self._incoming, self._outgoing)
        if self._session:
            nativetls.prefer_aes128(self._session)
        self._phase = TlsPhase.HANDSHAKE
        self._handshake()

    def _fail(
        self, reason: str, *, authentication: bool = False, code: ErrorCode = ErrorCode.TLS
    ) -> None:
        protocol = self._protocol
        assert protocol is not None
        protocol.transport_failed(reason, authentication=authentication, code=code)

    def _flush_cipher(self) -> None:
        """Move what OpenSSL encrypted to the socket, as far as it takes it now."""
        if self._session:  # straight from the output BIO, which the plane sends from too
            nativetls.flush(self._session, self._sock.fileno())
            return
        pending = self._outgoing.pending
        if pending:
            produced = self._outgoing.read()
            if self._cipher_out:
                self._cipher_out += produced
            else:
                try:
                    sent = self._sock.send(produced)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent < len(produced):
                    self._cipher_out += memoryview(produced)[sent:]
                return
        if self._cipher_out:
            try:
                sent = self._sock.send(self._cipher_out)
            except (BlockingIOError, InterruptedError):
                return
            del self._cipher_out[:sent]

    def _receive_cipher(self) -> bool:
        """One ``recv`` of ciphertext into OpenSSL's input; False if nothing came."""
        if self._own_input:  # into the plane's buffer, which OpenSSL reads from
            count = nativetls.take_in(self._session, self._sock.fileno())
            if count is None:
                return False
            self._peer_eof = self._peer_eof or count == 0
            return True
        if not self._cipher_in:  # given back while the channel was quiet
            self._cipher_in = bytearray(CIPHER_READ_INITIAL)
        try:
            count = self._sock.recv_into(self._cipher_in)
        except (BlockingIOError, InterruptedError):
            return False
        if count == 0:
            self._peer_eof = True
            self._incoming.write_eof()
            return True
        self._incoming.write(memoryview(self._cipher_in)[:count])
        if count == len(self._cipher_in) < CIPHER_READ and self._trusted:
            # a busy channel whose peer proved itself: read more at once
            self._cipher_in = bytearray(2 * count)
        return True

    def _on_io(self, mask: int) -> None:
        try:
            if self._phase is TlsPhase.SNIFF:
                self._sniff()
            elif self._phase is TlsPhase.HANDSHAKE:
                if mask & WRITE:
                    self._flush_cipher()
                if mask & READ and self._receive_cipher():
                    self._handshake()
                self._update()
            else:
                self._on_open_io(mask)
        except TransportError as exc:
            self._fail(exc.reason, authentication=exc.authentication, code=exc.code)
        except OSError as exc:
            if not self.closed:
                self._fail(f"channel read failed: {describe_error(exc)}",
                           code=ErrorCode.PEER_CLOSED)  # fmt: skip

    def _on_open_io(self, mask: int) -> None:
        protocol = self._protocol
        assert protocol is not None
        if mask & WRITE:
            self._flush_cipher()
            if not self._cipher_waiting() and self._want_write:
                protocol.write_ready()
                if self.closed:
                    return
        if mask & READ and self._want_read and self._receive_cipher():
            self._read_plaintext()
        self._update()

    def _sniff(self) -> None:
        """Server: a TLS client opens with a handshake record; anything else is a
        plaintext client, told so in its own protocol."""
        try:
            first = self._sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        if not first:
            self._fail("peer closed the connection before the TLS handshake",
                       code=ErrorCode.PEER_CLOSED)  # fmt: skip
        elif first[0] == TLS_RECORD_HANDSHAKE:
            self._start_tls()
            self._update()
        else:
            try:
                self._sock.send(error_frame(ErrorCode.TLS, PLAINTEXT_TO_TLS_SERVER))
            except OSError:
                pass
            self._fail("peer speaks plaintext; this server expects TLS (a client without --tls?)")

    def _handshake(self) -> None:
        tls = self._tls
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_cipher()
            if self._peer_eof:
                who = "client" if self._server_side else "server"
                hint = "" if self._server_side else " (is it a plaintext server?)"
                self._fail(f"TLS: the {who} closed the connection during the handshake{hint}",
                           code=ErrorCode.PEER_CLOSED)  # fmt: skip
            return
        except ssl.SSLError as exc:
            self._flush_cipher()  # our alert, so the peer learns why
            # A refused certificate is a failed authentication: the server penalises
            # the source, the client stops retrying fast.
            code = tls_failure_code(exc, self._server_side)
            self._fail(_describe_tls_error(exc, self._server_side),
                       authentication=code is ErrorCode.AUTH_FAILED, code=code)  # fmt: skip
            return
        self._flush_cipher()
        self.peer_certificate = tls.getpeercert(binary_form=True)
        if self._fingerprint is not None:
            got = certificate_fingerprint(self.peer_certificate or b"")
            if got != self._fingerprint:
                self._fail("TLS: the server's certificate does not match --tls-fingerprint "
                           f"(it is {format_fingerprint(got)})", authentication=True)  # fmt: skip
                return
        self._phase = TlsPhase.OPEN
        if self._session:  # records to the plane's own buffer from now on
            nativetls.own_output(self._session)
        if self._trusted:
            self._take_own_input()
        protocol = self._protocol
        assert protocol is not None
        protocol.write_ready()  # the HELLO that waited for the handshake
        if not self.closed and self._want_read and self._plaintext_waiting():
            self._read_plaintext()
        self._update()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and self._protocol is not None:
            self._drain_scheduled = True
            self._reactor.call_soon(self._drain, self._protocol)

    def _drain(self) -> None:
        self._drain_scheduled = False
        if not self.closed and self._phase is TlsPhase.OPEN and self._want_read:
            try:
                self._read_plaintext()
            except TransportError as exc:
                self._fail(exc.reason, authentication=exc.authentication, code=exc.code)
            self._update()

    def _read_plaintext(self) -> None:
        """Decrypt what arrived into the channel's buffer, record after record, and
        hand it over; stop when OpenSSL needs more ciphertext or the channel stops
        reading (the rest is drained once it reads again)."""
        tls, protocol = self._tls, self._protocol
        assert tls is not None and protocol is not None
        while self._want_read and not self.closed:
            buffer = protocol.get_buffer()
            end = len(buffer)
            filled = 0
            ended: str | None = None
            while filled < end:
                try:
                    # With a buffer, read() returns a count (typeshed says bytes).
                    count = cast(int, tls.read(end - filled, buffer[filled:]))
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:  # close_notify, as some versions report it
                    ended = "eof"
                    break
                except ssl.SSLEOFError:
                    ended = "the peer closed the connection without ending TLS"
                    break
                except ssl.SSLError as exc:
                    # Before any data, an alert may still be about the handshake (TLS
                    # 1.3 refuses a client certificate after the client finished).
                    code = (tls_failure_code(exc, self._server_side)
                            if not self._received_any else ErrorCode.TLS)  # fmt: skip
                    raise TransportError(_describe_tls_error(exc, self._server_side,
                                                             self._received_any),
                                         authentication=code is ErrorCode.AUTH_FAILED,
                                         code=code) from None  # fmt: skip
                if count == 0:  # close_notify arrived (read() reports it as 0 bytes)
                    ended = "eof"
                    break
                filled += count
                if not self._cipher_held() and not tls.pending() and not self._cipher_ended():
                    break  # all of it decrypted: a read now would only raise SSLWantReadError
            if filled:
                self._received_any = True
                protocol.buffer_updated(filled)
            if ended is not None:
                if not self.closed:
                    if ended == "eof":
                        protocol.eof_received()
                    else:
                        self._fail(ended, code=ErrorCode.PEER_CLOSED)
                return
            if filled < end:
                break  # OpenSSL wants more ciphertext
        self._flush_cipher()  # reading may have produced protocol data (key updates)
