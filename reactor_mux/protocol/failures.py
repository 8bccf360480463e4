"""Why a connect for a stream failed, in one word the opener can act on.

A ``SYN ERROR`` on a dynamic stream (``-D``, docs/protocol.md §5.1) starts
with one of these words and a colon, so the client can give its SOCKS client
the matching reply code; the rest of the reason is free text for the log.
"""

from __future__ import annotations

import enum


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
    """The server's rules (``--allow-connect``) do not allow the target."""
    FAILED = "failed"
    """Anything else (limits, shutdown, out of descriptors)."""


_BY_WORD = {failure.value: failure for failure in FailureClass}

_TEXT_CLUES = (  # (what describe_error or the policy says, the class)
    ("is not allowed by", FailureClass.FORBIDDEN),
    ("a non-public address that no", FailureClass.FORBIDDEN),
    ("connection refused", FailureClass.REFUSED),
    ("cannot resolve", FailureClass.UNRESOLVED),
    ("network is unreachable", FailureClass.NETWORK),
    ("no route to host", FailureClass.UNREACHABLE),
    ("host is unreachable", FailureClass.UNREACHABLE),
    ("timed out", FailureClass.TIMEOUT),
)


def classify(reason: str) -> FailureClass:
    """The class of a connect failure, from the reason this implementation logs."""
    lowered = reason.lower()
    for clue, failure in _TEXT_CLUES:
        if clue in lowered:
            return failure
    return FailureClass.FAILED


def classified_reason(reason: str) -> str:
    """``reason`` with its class in front, as a dynamic stream's SYN ERROR carries it."""
    return f"{classify(reason).value}: {reason}"


def class_of(syn_error_reason: str) -> FailureClass:
    """Read the class back from a SYN ERROR reason (FAILED when it has none)."""
    word, colon, _rest = syn_error_reason.partition(":")
    return _BY_WORD.get(word, FailureClass.FAILED) if colon else FailureClass.FAILED
