"""Every command, described once: its words, its arguments, what its id names, who
sends it, whether a resume replays it, and the channel states it may arrive in.

A session checks a received command against this table in one place
(``Session._on_command``), before its handler runs, the way h2's
``H2ConnectionStateMachine`` checks (state, input) pairs: anything the table
does not allow is a violation, whatever the handler would have made of it.
Handlers keep only what the table cannot say (a nonce that must have been
sent first, a stream that must exist).  ``tests/test_verbs.py`` drives every
(role, state, verb) triple through a real session, for the four states in
which bytes arrive (a DISCONNECTED session has no connection to read, a
FAILED one reads nothing), and checks the outcome
against this table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verb(enum.Enum):
    """Every command, spelled exactly as on the wire."""

    # Looked up per command frame (handlers, rules): hash by identity, not
    # through enum's Python-level __hash__.
    __hash__ = object.__hash__

    HELLO = "HELLO"
    AUTH = "AUTH"
    AUTH_OK = "AUTH OK"
    ERROR = "ERROR"
    PING = "PING"
    PONG = "PONG"
    CONNECT = "CONNECT"
    CONNECT_OK = "CONNECT OK"
    CONNECT_ERROR = "CONNECT ERROR"
    BIND = "BIND"
    BIND_OK = "BIND OK"
    BIND_ERROR = "BIND ERROR"
    DYNAMIC = "DYNAMIC"
    DYNAMIC_OK = "DYNAMIC OK"
    DYNAMIC_ERROR = "DYNAMIC ERROR"
    UDP_CONNECT = "UDP-CONNECT"
    UDP_CONNECT_OK = "UDP-CONNECT OK"
    UDP_CONNECT_ERROR = "UDP-CONNECT ERROR"
    UDP_BIND = "UDP-BIND"
    UDP_BIND_OK = "UDP-BIND OK"
    UDP_BIND_ERROR = "UDP-BIND ERROR"
    UNMAP = "UNMAP"
    UNMAP_OK = "UNMAP OK"
    SYN = "SYN"
    SYN_OK = "SYN OK"
    SYN_ERROR = "SYN ERROR"
    FIN = "FIN"
    ACK = "ACK"
    RST = "RST"
    BLOCKED = "BLOCKED"
    WINDOW = "WINDOW"
    BYE = "BYE"
    SESSION = "SESSION"
    RESUME_NONCE = "RESUME NONCE"
    RESUME_PROOF = "RESUME PROOF"
    RESUME_OK = "RESUME OK"
    RECEIVED = "RECEIVED"
    RESUME_END = "RESUME END"


class Scope(enum.Enum):
    """What the frame's id field names for a verb."""

    CHANNEL = "channel"  # id must be 0
    MAPPING = "mapping"  # id is a mapping number (>= 1)
    STREAM = "stream"  # id is a stream id (>= 1)


class ChannelState(enum.Enum):
    """Where the channel as a whole is: every frame but HELLO and ERROR waits for
    the peer's HELLO, mappings and streams wait for authentication where it is
    on, a resume exchange has its own commands, and nothing moves once the
    channel has failed, or while a resumable one has no connection."""

    AWAITING_HELLO = "awaiting HELLO"
    AUTHENTICATING = "authenticating"
    RESUMING = "resuming"
    OPEN = "open"
    DISCONNECTED = "disconnected"  # a resumable session between a cut and a new connection
    FAILED = "failed"


class Role(enum.Enum):
    """Which end of the channel a session is; decides id parity and verbs."""

    CLIENT = "client"
    SERVER = "server"


class Sender(enum.Enum):
    """Which role may send a verb."""

    CLIENT = "clients"
    SERVER = "servers"
    EITHER = "either"


MANY = 1 << 16
"""An argument count without a limit (free text after the verb)."""

_A, _H, _R, _O = (ChannelState.AWAITING_HELLO, ChannelState.AUTHENTICATING,
                  ChannelState.RESUMING, ChannelState.OPEN)  # fmt: skip
ANY_TIME = frozenset((_A, _H, _R, _O))
AFTER_HELLO = frozenset((_H, _R, _O))
HANDSHAKE = frozenset((_H,))
RESUME = frozenset((_R,))
OPEN = frozenset((_O,))


@dataclass(frozen=True, slots=True)
class VerbRule:
    arity: tuple[int, int]
    """(fewest, most) argument words after the verb."""
    scope: Scope
    sender: Sender
    logged: bool
    """Kept in the resume log and replayed after a cut (docs/protocol.md §9.1): it
    belongs to the session, not to one connection."""
    states: frozenset[ChannelState]
    """Where it may arrive; anywhere else it is a violation."""


_C, _M, _S = Scope.CHANNEL, Scope.MAPPING, Scope.STREAM
_CL, _SV, _EI = Sender.CLIENT, Sender.SERVER, Sender.EITHER

VERBS: dict[Verb, VerbRule] = {
    # The handshake: one connection's, never replayed.
    Verb.HELLO: VerbRule((3, 5), _C, _EI, False, frozenset((_A,))),
    Verb.AUTH: VerbRule((3, 3), _C, _CL, False, HANDSHAKE),
    Verb.AUTH_OK: VerbRule((1, 1), _C, _SV, False, HANDSHAKE),
    Verb.ERROR: VerbRule((1, MANY), _C, _EI, False, ANY_TIME),
    Verb.PING: VerbRule((1, 1), _C, _EI, False, AFTER_HELLO),
    Verb.PONG: VerbRule((1, 1), _C, _EI, False, AFTER_HELLO),
    # Mappings (§5): the session's, replayed.
    Verb.CONNECT: VerbRule((1, 1), _M, _CL, True, OPEN),
    Verb.CONNECT_OK: VerbRule((0, 0), _M, _SV, True, OPEN),
    Verb.CONNECT_ERROR: VerbRule((1, MANY), _M, _SV, True, OPEN),
    Verb.BIND: VerbRule((1, 1), _M, _CL, True, OPEN),
    Verb.BIND_OK: VerbRule((1, 1), _M, _SV, True, OPEN),
    Verb.BIND_ERROR: VerbRule((1, MANY), _M, _SV, True, OPEN),
    Verb.DYNAMIC: VerbRule((0, 0), _M, _CL, True, OPEN),
    Verb.DYNAMIC_OK: VerbRule((0, 0), _M, _SV, True, OPEN),
    Verb.DYNAMIC_ERROR: VerbRule((1, MANY), _M, _SV, True, OPEN),
    Verb.UDP_CONNECT: VerbRule((1, 1), _M, _CL, True, OPEN),
    Verb.UDP_CONNECT_OK: VerbRule((0, 0), _M, _SV, True, OPEN),
    Verb.UDP_CONNECT_ERROR: VerbRule((1, MANY), _M, _SV, True, OPEN),
    Verb.UDP_BIND: VerbRule((1, 1), _M, _CL, True, OPEN),
    Verb.UDP_BIND_OK: VerbRule((1, 1), _M, _SV, True, OPEN),
    Verb.UDP_BIND_ERROR: VerbRule((1, MANY), _M, _SV, True, OPEN),
    Verb.UNMAP: VerbRule((0, 0), _M, _CL, True, OPEN),
    Verb.UNMAP_OK: VerbRule((0, 0), _M, _SV, True, OPEN),
    # Streams (§5, §6).  FIN is not logged: it leaves from its stream's ring, right
    # after the last byte, and the resume tables say whether it arrived.
    Verb.SYN: VerbRule((1, 2), _S, _EI, True, OPEN),
    Verb.SYN_OK: VerbRule((0, 0), _S, _EI, True, OPEN),
    Verb.SYN_ERROR: VerbRule((1, MANY), _S, _EI, True, OPEN),
    Verb.FIN: VerbRule((0, 0), _S, _EI, False, OPEN),
    Verb.ACK: VerbRule((1, 1), _S, _EI, True, OPEN),
    Verb.RST: VerbRule((1, MANY), _S, _EI, True, OPEN),
    Verb.BLOCKED: VerbRule((1, 1), _S, _EI, True, OPEN),
    Verb.WINDOW: VerbRule((1, 1), _S, _EI, True, OPEN),
    Verb.BYE: VerbRule((0, 0), _C, _EI, True, OPEN),
    # Resume (§9): one connection's exchange, never replayed.
    Verb.SESSION: VerbRule((1, 3), _C, _SV, False, OPEN),
    Verb.RESUME_NONCE: VerbRule((1, 1), _C, _SV, False, RESUME),
    Verb.RESUME_PROOF: VerbRule((2, 2), _C, _CL, False, RESUME),
    Verb.RESUME_OK: VerbRule((0, 0), _C, _SV, False, RESUME),
    Verb.RECEIVED: VerbRule((2, 2), _S, _EI, False, RESUME),
    Verb.RESUME_END: VerbRule((2, 2), _C, _EI, False, RESUME),
}

assert set(VERBS) == set(Verb), "every verb is described"
