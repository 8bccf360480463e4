"""The command vocabulary: parsing and formatting command frame bodies.

A command body is printable ASCII words (0x21-0x7E) separated by exactly one
space.  The first word, or the first two for replies such as ``SYN OK``,
is the verb; the rest are its arguments.  Each verb's argument count is data
(``verbs.VERBS``), checked in one place.
"""

from __future__ import annotations

import re

from reactor_mux.protocol import syntax
from reactor_mux.protocol.errors import ProtocolError
from reactor_mux.protocol.limits import MAX_COMMAND_BODY, MAX_HOST_LENGTH
from reactor_mux.protocol.verbs import VERBS, Verb

_TWO_WORD = {v.value: v for v in Verb if " " in v.value}
_ONE_WORD = {v.value: v for v in Verb if " " not in v.value}

_WORD = re.compile(rb"[\x21-\x7e]+")
_CLIENT_ID = re.compile(r"[0-9A-Za-z_-]{8,64}")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")


class Command:
    """A parsed command: its verb and argument words."""

    __slots__ = ("args", "verb")

    def __init__(self, verb: Verb, args: list[str]) -> None:
        self.verb = verb
        self.args = args

    @property
    def reason(self) -> str:
        """The free-text argument words of an ERROR-style command, rejoined."""
        return " ".join(self.args)

    def __repr__(self) -> str:
        return f"Command({self.verb.value!r}, {self.args!r})"


def parse_command(body: bytes | memoryview) -> Command:
    """Parse a command body, raising ``ProtocolError`` on anything malformed."""
    raw = bytes(body)
    if not raw:
        raise ProtocolError("empty command")
    if len(raw) > MAX_COMMAND_BODY:
        raise ProtocolError("command body too long")
    words = raw.split(b" ")
    for word in words:
        if not _WORD.fullmatch(word):
            raise ProtocolError("command is not printable ASCII words separated by single spaces")
    text = [w.decode("ascii") for w in words]
    verb = None
    if len(text) >= 2:
        verb = _TWO_WORD.get(text[0] + " " + text[1])
        if verb is not None:
            args = text[2:]
    if verb is None:
        verb = _ONE_WORD.get(text[0])
        args = text[1:]
        if verb is None:
            raise ProtocolError(f"unknown command {text[0][:32]!r}")
    low, high = VERBS[verb].arity
    if not low <= len(args) <= high:
        raise ProtocolError(f"{verb.value} takes {low}..{min(high, 99)} arguments, got {len(args)}")
    return Command(verb, args)


def format_command(verb: Verb, *args: str | int) -> bytes:
    """Format a command body; free text is sanitised into legal words."""
    words = [verb.value]
    for arg in args:
        words.extend(_sanitise(str(arg)))
    body = " ".join(words).encode("ascii")
    if len(body) > MAX_COMMAND_BODY:
        body = body[:MAX_COMMAND_BODY].rsplit(b" ", 1)[0]
    return body


def _sanitise(text: str) -> list[str]:
    """Split free text into printable ASCII words (others become '?')."""
    if text.isascii() and text.isprintable() and " " not in text and text:
        return [text]  # already one legal word: every number, most names
    cleaned = "".join(c if "\x21" <= c <= "\x7e" else (" " if c.isspace() else "?") for c in text)
    return cleaned.split() or ["-"]


def parse_decimal(word: str, what: str, low: int, high: int) -> int:
    """Parse a canonical decimal in [low, high] or raise ``ProtocolError``."""
    try:
        return syntax.parse_decimal(word, what, low, high, canonical=True)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def parse_client_id(word: str) -> str:
    """A client's identity token: 8 to 64 of [0-9A-Za-z_-]."""
    if not _CLIENT_ID.fullmatch(word):
        raise ProtocolError(f"not a client id: {word[:64]!r}")
    return word


def parse_host_port(word: str, *, allow_port_zero: bool) -> tuple[str, int]:
    """Parse ``host:port`` / ``[v6]:port`` from a command argument."""
    match = _HOST_PORT.fullmatch(word)
    if not match:
        raise ProtocolError(f"not a host:port address: {word[:64]!r}")
    host, port_text = match.groups()
    if host.startswith("["):
        host = host[1:-1]
    if len(host) > MAX_HOST_LENGTH:
        raise ProtocolError("host name too long")
    port = parse_decimal(port_text, "port", 0 if allow_port_zero else 1, 65535)
    return host, port
