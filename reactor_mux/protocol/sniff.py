"""What a peer that does not speak this protocol seems to be, from its first bytes.

A channel's first frame is a HELLO, whose header starts with a zero byte; a
peer whose first bytes fail that is told apart here so the log can say
``127.0.0.1:22 is not a reactor-mux server (it sent an SSH banner)`` rather
than a frame error.
"""

from __future__ import annotations

TLS_HANDSHAKE = b"\x16\x03"
TLS_ALERT = b"\x15\x03"

_SIGNATURES = (  # (first bytes, what they are)
    (
        b"PROXY ",
        "it sent a PROXY protocol header, from an address not in the server's "
        "--proxy-protocol-from",
    ),
    (
        b"\r\n\r\n\x00\r\nQUIT\n",
        "it sent a PROXY protocol header, from an address not in "
        "the server's --proxy-protocol-from",
    ),
    (b"SSH-", "it sent an SSH banner"),
    (b"HTTP/", "it sent an HTTP response"),
    (TLS_ALERT, "it sent a TLS alert: a TLS server? (start the client with --tls)"),
    (b"-ERR", "it sent a Redis error"),
    (b"220 ", "it sent an SMTP or FTP greeting"),
    (b"* OK", "it sent an IMAP greeting"),
    (b"+OK", "it sent a POP3 greeting"),
)


def identify(first: bytes) -> str:
    """A short description of a foreign peer's opening bytes."""
    for signature, what in _SIGNATURES:
        if first.startswith(signature):
            return what
    if first and all(0x20 <= byte < 0x7F or byte in (0x09, 0x0A, 0x0D) for byte in first):
        text = first.decode("ascii").split("\n")[0].strip()[:40]
        return f"it sent text: {text!r}"
    return f"it sent bytes {first[:8].hex(' ')}"
