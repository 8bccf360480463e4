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


def violation_fragments() -> list[str]:
    """The words §7's table says each reason contains (split at its ``...``/``<x>``)."""
    text = SPEC.read_text()
    section = text[text.index("## 7. Violations") : text.index("## 8. ")]
    fragments = []
    for line in section.splitlines():
        cells = line.split(" | ")
        if len(cells) < 2 or not line.startswith("|"):
            continue
        for quoted in re.findall(r"`([^`]+)`", cells[-1]):
            fragments += [piece.strip() for piece in re.split(r"\.\.\.|<[^>]*>", quoted)]
    return [fragment for fragment in fragments if len(fragment) >= 4]


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
    fragments = violation_fragments()
    missing = [
        f"{name}:{line}: {''.join(parts)!r}"
        for name, line, parts in reported_violations()
        if not any(fragment in part for part in parts for fragment in fragments)
    ]
    assert not missing, "not in docs/protocol.md §7:\n" + "\n".join(missing)


def test_the_check_sees_the_violations() -> None:
    assert len(reported_violations()) >= 50
    assert "peer is not reading: over " in [p for _, _, parts in reported_violations()
                                            for p in parts]  # fmt: skip
