"""TOML read for people: a file that does not parse is named with its line, and a
key or table given twice is named itself (the parser says only "cannot overwrite
a value"), so the one-line error says what to fix."""

from __future__ import annotations

import re
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_WHERE = re.compile(r"\s*\(at line (\d+), column \d+\)\s*$")
_TABLE_TWICE = re.compile(r"^Cannot declare \((.*?),?\) twice")


class TomlError(ValueError):
    """``where`` is ``:LINE`` (or empty), ``what`` the problem in words."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}" if where else what)
        self.where = where
        self.what = what


def parse(text: str) -> dict[str, Any]:
    """``tomllib.loads`` whose error names the line, and the key set twice."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Newer parsers (Python 3.14's tomllib) carry the line and the words apart;
        # older ones only in the message, which is all they offer to tell kinds apart.
        message = str(exc)
        found = _WHERE.search(message)
        line = getattr(exc, "lineno", None) or (int(found.group(1)) if found else None)
        said = getattr(exc, "msg", None) or _WHERE.sub("", message)
        where = f":{line}" if line else ""
        raise TomlError(where, _explain(said, text, line)) from None


def _explain(said: str, text: str, line: int | None) -> str:
    lines = text.splitlines()
    written = lines[line - 1] if line is not None and 0 < line <= len(lines) else ""
    if said.startswith("Cannot overwrite a value") and "=" in written:
        key = written.split("=", 1)[0].strip()
        return f"{key} is set twice (a key may appear once in its table)"
    table = _TABLE_TWICE.match(said)
    if table:
        name = ".".join(part.strip().strip("'\"") for part in table.group(1).split(","))
        return f"[{name}] is declared twice"
    return f"not valid TOML: {said}"
