"""Penalties per source block: who misbehaved before authenticating is turned away.

OpenSSH 9.8 answered a stranger who holds handshakes open, or keeps failing,
with ``PerSourcePenalties``; this is the same idea with the same defaults
where the two meet.  Each way a connection can end before authenticating
(``Offence``) adds a duration to its source block's penalty: added to what is
left of it, so repeats grow it, up to ``max``.  A block is turned away at
accept only once its penalty reached ``min`` (a single typo in a secret does
not lock anyone out; a handshake left to time out does), and until the
penalty runs out.  ``--penalty-exempt`` networks are never penalised.

The table is bounded: at ``max_sources`` blocks the one penalised longest ago
is forgotten first (ssh's ``overflow:permissive``), so a flood from many
addresses costs a fixed amount of memory and never turns away a block that
did nothing.  A block is a string such as ``127.0.0.2/32`` (``sourceblock``).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace


class Offence(enum.Enum):
    """How a connection ended before it authenticated; each has its own penalty."""

    AUTH_FAILED = "authfail"
    """It failed to authenticate (a wrong secret or proof, an unknown name)."""
    NO_AUTH = "noauth"
    """It went away (or was dropped to make room) without attempting to."""
    GRACE_EXCEEDED = "grace-exceeded"
    """It did not finish the handshake within ``--handshake-timeout``."""
    PROTOCOL = "protocol"
    """It broke the protocol (garbage, a frame out of place)."""
    TLS = "tls"
    """Its TLS handshake was refused (not TLS, a refused client certificate)."""


DEFAULT_DURATIONS = {
    Offence.AUTH_FAILED: 5.0,
    Offence.NO_AUTH: 1.0,
    Offence.GRACE_EXCEEDED: 10.0,
    Offence.PROTOCOL: 20.0,
    Offence.TLS: 5.0,
}
"""Seconds each offence adds (ssh's figures for authfail and noauth; grace-exceeded is
ssh 9.8's 10 s, so that one stalled handshake, which a flaky network can cause, does
not reach ``min`` and lock a client out of its own resume, while two do)."""

DEFAULT_MIN = 15.0
"""A block is turned away only once its penalty reached this (ssh's ``min``)."""
DEFAULT_MAX = 600.0
"""The longest a block is turned away, however often it offends (ssh's ``max``)."""
DEFAULT_MAX_SOURCES = 65536
"""Blocks remembered at once (ssh's ``max-sources4``); about 16 MiB when full (measured
245 bytes a block)."""

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class PenaltySpecError(ValueError):
    """A ``--per-source-penalties`` value that cannot be used."""


@dataclass(frozen=True)
class PenaltySpec:
    """``--per-source-penalties``: what each offence costs, and the bounds."""

    enabled: bool = True
    durations: dict[Offence, float] = field(default_factory=lambda: dict(DEFAULT_DURATIONS))
    minimum: float = DEFAULT_MIN
    maximum: float = DEFAULT_MAX
    max_sources: int = DEFAULT_MAX_SOURCES

    @classmethod
    def parse(cls, text: str) -> PenaltySpec:
        """``off``, or words such as ``authfail:5 grace-exceeded:1m max:10m`` over the
        defaults (ssh's spelling: a duration in seconds, or with s, m, h, d or w)."""
        words = text.replace(",", " ").split()
        if words in (["off"], ["no"]):
            return cls(enabled=False)
        if not words:
            raise PenaltySpecError("give 'off' or KEYWORD:VALUE words such as 'authfail:5'")
        if "off" in words or "no" in words:
            raise PenaltySpecError("'off' stands alone: it turns every penalty off")
        spec = cls()
        durations = dict(spec.durations)
        by_word = {offence.value: offence for offence in Offence}
        for word in words:
            key, colon, value = word.partition(":")
            if not colon or not value:
                raise PenaltySpecError(f"{word!r} is not KEYWORD:VALUE")
            if key in by_word:
                durations[by_word[key]] = _duration(value, word)
            elif key == "min":
                spec = replace(spec, minimum=_duration(value, word))
            elif key == "max":
                spec = replace(spec, maximum=_duration(value, word))
            elif key == "max-sources":
                if not value.isdigit() or not 1 <= int(value) <= 1 << 24:
                    raise PenaltySpecError(f"{word!r}: max-sources is a count in 1..16777216")
                spec = replace(spec, max_sources=int(value))
            else:
                known = ", ".join([*by_word, "min", "max", "max-sources"])
                raise PenaltySpecError(f"unknown keyword {key!r} (known: {known}, or 'off')")
        if spec.minimum > spec.maximum:
            raise PenaltySpecError("min is longer than max: no penalty would ever apply")
        return replace(spec, durations=durations)

    def spell(self) -> str:
        """The spec as ``parse`` reads it (for check-config)."""
        if not self.enabled:
            return "off"
        words = [f"{offence.value}:{self.durations[offence]:g}" for offence in Offence]
        words += [f"min:{self.minimum:g}", f"max:{self.maximum:g}",
                  f"max-sources:{self.max_sources}"]  # fmt: skip
        return " ".join(words)


def _duration(text: str, word: str) -> float:
    match = _DURATION.fullmatch(text)
    if not match:
        raise PenaltySpecError(f"{word!r}: {text!r} is not a duration such as 20, 20s or 2m")
    seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if seconds > 86400 * 7:
        raise PenaltySpecError(f"{word!r}: at most a week")
    return seconds


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """``--penalty-exempt`` values: networks in CIDR form (an address is its /32 or
    /128), one per value or several separated by commas (as sshd's list is)."""
    networks: list[Network] = []
    for text in (part for value in texts for part in value.split(",")):
        try:
            networks.append(ipaddress.ip_network(text.strip().strip("[]"), strict=False))
        except ValueError:
            raise PenaltySpecError(f"{text!r} is not an address or a network such as "
                                   "10.0.0.0/8") from None  # fmt: skip
    return tuple(networks)


class _Record:
    __slots__ = ("accrued", "enforced_until", "until")

    def __init__(self) -> None:
        self.until = 0.0  # when the accumulated penalty runs out
        self.accrued = 0.0  # seconds added since it last ran out
        self.enforced_until = 0.0  # turned away until then (0: below min so far)


class PenaltyBox:
    """The penalty of every source block that offended recently."""

    def __init__(self, spec: PenaltySpec) -> None:
        self.spec = spec
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self.forgotten = 0
        """Blocks dropped because the table was full (a flood of distinct sources)."""

    def __len__(self) -> int:
        return len(self._records)

    def penalise(self, block: str, offence: Offence, now: float) -> float | None:
        """Add ``offence``'s penalty to ``block``; if that starts turning it away,
        until when (None if it was turned away already, or is not yet)."""
        spec = self.spec
        if not spec.enabled:
            return None
        record = self._records.pop(block, None)
        if record is None:
            record = _Record()
        duration = spec.durations[offence]
        if record.until <= now:  # the last penalty ran out: start afresh
            record.accrued = 0.0
        record.accrued += duration
        record.until = min(max(record.until, now) + duration, now + spec.maximum)
        self._records[block] = record  # most recently penalised last
        starts = None
        if record.accrued >= spec.minimum and record.until > record.enforced_until:
            if record.enforced_until <= now:
                starts = record.until
            record.enforced_until = record.until
        while len(self._records) > spec.max_sources:
            self._records.popitem(last=False)
            self.forgotten += 1
        return starts

    def refused_until(self, block: str, now: float) -> float | None:
        """Until when ``block`` is turned away, or None if it is not."""
        record = self._records.get(block)
        if record is None:
            return None
        if now >= record.until:
            del self._records[block]  # served its time: forget it
            return None
        return record.enforced_until if now < record.enforced_until else None

    def enforced(self, now: float) -> int:
        """How many blocks are turned away now (for the metrics; walks the table)."""
        return sum(1 for record in self._records.values() if now < record.enforced_until)

    def reconfigure(self, spec: PenaltySpec) -> None:
        """A reload: new durations apply to new offences; penalties already earned stay
        (off forgets them all)."""
        self.spec = spec
        if not spec.enabled:
            self._records.clear()
        while len(self._records) > spec.max_sources:
            self._records.popitem(last=False)
