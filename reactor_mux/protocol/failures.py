"""Why a stream or a mapping was refused, as a class the other side can act on.

Every ``SYN ERROR``, ``CONNECT ERROR``, ``BIND ERROR`` and ``DYNAMIC ERROR``
reason starts with one of these words and a colon (docs/protocol.md §5.1):
the opener of a dynamic stream turns it into a SOCKS reply code, the client
decides by it whether asking again for a refused ``-R`` can help, and the
metrics count refusals by it.  The rest of the reason is words for people.

A reason from an older peer has no class word; ``class_of`` reads the few
phrases that peer used, in this one place, so that it is still understood.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FailureClass(enum.Enum):
    REFUSED = "refused"
    """The target answered with a reset: nothing listens there."""
    UNREACHABLE = "unreachable"
    """No route to the host."""
    NETWORK = "network"
    """No route to the network."""
    UNRESOLVED = "unresolved"
    """The name does not resolve."""
    TIMEOUT = "timeout"
    """The target did not answer in time."""
    FORBIDDEN = "forbidden"
    """The server's rules (``--allow-connect``, ``--allow-bind``, ``--gateway-ports``)
    do not allow it: asking again cannot help."""
    LIMIT = "limit"
    """A limit of the channel is reached (streams, pending connects, mappings)."""
    UNAVAILABLE = "unavailable"
    """The address cannot be listened on now (in use): it may be free later."""
    SHUTDOWN = "shutdown"
    """The side that refused is shutting down."""
    FAILED = "failed"
    """Anything else (out of descriptors, a removed mapping, a bug)."""

    @property
    def passing(self) -> bool:
        """Asking again later may succeed (a refused ``-R`` is asked for again)."""
        return self in _PASSING


_PASSING = frozenset((FailureClass.LIMIT, FailureClass.UNAVAILABLE, FailureClass.SHUTDOWN))
_BY_WORD = {failure.value: failure for failure in FailureClass}


@dataclass(frozen=True, slots=True)
class Failure:
    """A refusal or a failed connect: its class to decide by, its words for people."""

    kind: FailureClass
    text: str

    @property
    def wire(self) -> str:
        """The reason as a refusal carries it: ``refused: connect to ... failed: ...``."""
        return f"{self.kind.value}: {self.text}"

    def __str__(self) -> str:
        return self.text


_OLDER_PEERS = (  # (what a peer without class words said, its class)
    ("is not allowed by", FailureClass.FORBIDDEN),
    ("a non-public address that no", FailureClass.FORBIDDEN),
    ("--gateway-ports", FailureClass.FORBIDDEN),
    ("must be an IP address", FailureClass.FORBIDDEN),
    ("too many", FailureClass.LIMIT),
    ("cannot listen on", FailureClass.UNAVAILABLE),
    ("shutting down", FailureClass.SHUTDOWN),
)


def class_of(reason: str) -> FailureClass:
    """The class a refusal's reason starts with; for an older peer's reason without
    one, the class its words name (FAILED when they name none)."""
    word, colon, _rest = reason.partition(":")
    if colon and word in _BY_WORD:
        return _BY_WORD[word]
    for phrase, failure in _OLDER_PEERS:
        if phrase in reason:
            return failure
    return FailureClass.FAILED


def text_of(reason: str) -> str:
    """A refusal's reason without its class word: what the log shows."""
    word, colon, rest = reason.partition(":")
    return rest.lstrip() if colon and word in _BY_WORD else reason
