"""The docs say what the code does: every violation the protocol core can report
is listed in docs/protocol.md §7, by words its reason contains."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

pytestmark = pytest.mark.codec_independent

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "reactor_mux" / "protocol"
SPEC = ROOT / "docs" / "protocol.md"


def violation_patterns() -> list[re.Pattern[str]]:
    """The phrases §7's table says each reason contains, as patterns: ``...`` and
    ``<x>`` stand for any text.  Phrases of fewer than 8 literal characters (a
    lone ``window``) are too loose to prove anything and are left out."""
    text = SPEC.read_text()
    section = text[text.index("## 7. Violations") : text.index("## 8. ")]
    patterns = []
    for line in section.splitlines():
        cells = line.split(" | ")
        if len(cells) < 2 or not line.startswith("|"):
            continue
        for quoted in re.findall(r"`([^`]+)`", cells[-1]):
            pieces = [piece for piece in re.split(r"\.\.\.|<[^>]*>", quoted)]
            if sum(len(piece.strip()) for piece in pieces) >= 8:
                patterns.append(re.compile(".*".join(re.escape(piece) for piece in pieces)))
    return patterns


def reported_violations() -> list[tuple[str, int, list[str]]]:
    """(file, line, the literal parts of the reason) of each ``raise ProtocolError``."""
    found = []
    for path in sorted(PROTOCOL.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            call = node.exc
            if not (isinstance(call.func, ast.Name) and call.func.id == "ProtocolError"):
                continue
            message = call.args[0] if call.args else None
            if isinstance(message, ast.Constant) and isinstance(message.value, str):
                parts = [message.value]
            elif isinstance(message, ast.JoinedStr):
                parts = [
                    value.value
                    for value in message.values
                    if isinstance(value, ast.Constant) and isinstance(value.value, str)
                ]
            else:
                continue  # a message made elsewhere (a constant, another error's text)
            if any(re.search("[a-z]{3}", part) for part in parts):
                found.append((path.name, node.lineno, parts))
    return found


def test_every_violation_the_core_reports_is_in_the_spec() -> None:
    patterns = violation_patterns()
    missing = [
        f"{name}:{line}: {'X'.join(parts)!r}"
        for name, line, parts in reported_violations()
        if not any(pattern.search("X".join(parts)) for pattern in patterns)
    ]
    assert not missing, "not in docs/protocol.md §7:\n" + "\n".join(missing)


def test_the_check_sees_the_violations() -> None:
    assert len(reported_violations()) >= 50
    assert "peer is not reading: over " in [p for _, _, parts in reported_violations()
                                            for p in parts]  # fmt: skip
