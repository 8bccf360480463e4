"""The command line's value types: argparse converters for sizes, durations,
counts and forward specs, and ``format_size``, which spells a size back.

Each turns a bad value into argparse's one-line usage error.  They are apart
from the parser because a config file's values go through them too
(configfile.py reads each key with its option's converter, and check-config
prints it back with ``spell``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import TypeVar

from reactor_mux.protocol.syntax import parse_decimal
from reactor_mux.roles.specs import ForwardSpec, SpecError
from reactor_mux.service.control import parse_forward_words

T = TypeVar("T")

_SIZE = re.compile(r"([0-9]+)([kKmMgG]?)(i?[bB])?")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def format_size(value: int) -> str:
    """The shortest exact spelling the size options accept: 262144 -> '256K'."""
    for suffix, unit in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


class SizeType:
    """An argparse converter for sizes such as 262144, 256K, 1M or 1MiB
    (``spell`` writes a size back the way check-config prints it)."""

    spell = staticmethod(format_size)

    def __init__(self, what: str, low: int, high: int) -> None:
        self.what, self.low, self.high = what, low, high

    def __call__(self, text: str) -> int:
        match = _SIZE.fullmatch(text)
        if not match:
            raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 262144, 256K or 1M")
        value = int(match.group(1)) * _UNITS[match.group(2).lower()]
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(
                f"{self.what} {value} is outside {self.low}..{self.high} bytes"
            )
        return value


def count_type(what: str, low: int, high: int) -> Callable[[str], int]:
    """An argparse converter for a whole number within ``[low, high]``."""

    def convert(text: str) -> int:
        try:
            return parse_decimal(text, what, low, high)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def seconds(text: str) -> float:
    """An argparse converter for a duration in (0, 86400] seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be within (0, 86400] seconds")
    return value


def seconds_or_off(text: str) -> float:
    """Like ``seconds``, but 0 is allowed: it turns the feature off."""
    if text.strip() in ("0", "0.0"):
        return 0.0
    try:
        return seconds(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be 0 (off) or within (0, 86400] seconds"
        ) from None


def spec_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Turn a SpecError into argparse's one-line usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except SpecError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def flagged(flag: str, text: str) -> ForwardSpec:
    """The ``forward`` command's ``-L``, ``-R`` or ``-D`` value, read as the client reads it."""
    try:
        return parse_forward_words([flag, text])
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
