"""Code checks that run with the suite: lint, types, and the sans-I/O boundary."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.codec_independent

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = {"socket", "selectors", "select", "time", "threading", "asyncio"}
PER_THREAD_SCRATCH = {"_c.py": {"threading"}}
"""The compiled codec keeps its scratch space in a ``threading.local``: no thread of
its own, but several reactors may run in one program (the Python API), each in its
own thread, and the codec's calls must not share what they write into."""


@pytest.mark.parametrize("package", ["protocol", "codec"])
def test_the_core_imports_no_io(package):
    """The protocol core and codec must stay sans-I/O (no sockets, no clocks)."""
    for path in (ROOT / "reactor_mux" / package).glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                allowed = PER_THREAD_SCRATCH.get(path.name, set())
                assert top not in FORBIDDEN_IN_CORE - allowed, f"{path.name} imports {name}"
                if top == "reactor_mux":
                    assert name.startswith(("reactor_mux.protocol", "reactor_mux.codec")) or (
                        name == "reactor_mux"
                    ), f"{path.name} imports {name}, outside the core"


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


LAYERS = [
    "codec", "protocol", "io", "tunnel", "security", "roles", "service", "tools", "cli", "api",
]  # fmt: skip
"""reactor_mux's packages from the bottom up: each imports only from those below it
(and from the top-level helpers ``errors`` and ``logformat``, which import none)."""


def imported_packages(path: pathlib.Path) -> set[str]:
    """The reactor_mux packages (or top-level modules) a file imports from."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "reactor_mux" and len(parts) > 1:
                found.add(parts[1])
            elif node.module == "reactor_mux":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "reactor_mux" and len(parts) > 1:
                    found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_the_layers_import_only_downward(layer):
    """The package listing reads as the architecture, so no import may run back up."""
    allowed = set(LAYERS[: LAYERS.index(layer) + 1]) | {"errors", "logformat", "__version__"}
    for path in sorted((ROOT / "reactor_mux" / layer).glob("*.py")):
        upward = imported_packages(path) - allowed
        assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)} from above"
    for helper in ("errors", "logformat"):
        assert not imported_packages(ROOT / "reactor_mux" / f"{helper}.py")


def test_ruff_is_clean():
    pytest.importorskip("ruff")
    result = run_tool("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_tool("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean():
    pytest.importorskip("mypy")
    result = run_tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


PROSE = ("reason", "message", "why")
"""Names that hold words for people: a decision must never read them."""
READS_OLDER_PEERS = {"protocol/errorcodes.py", "protocol/failures.py"}
"""The one place each that reads an older peer's words (it sends no code)."""


def _prose(node: ast.AST) -> str | None:
    name = (
        node.id
        if isinstance(node, ast.Name)
        else node.attr
        if isinstance(node, ast.Attribute)
        else ""
    )
    return name if name.islower() and any(word in name for word in PROSE) else None


def test_no_decision_reads_a_reason_string():
    """Issue 21: decisions match codes (ErrorCode, FailureClass, Reloaded); the words of a
    reason are for people, so rewording one changes no behaviour.  This fails on
    ``"x" in reason``, ``reason.startswith(...)`` and the like, and on comparing a
    reason with a string, anywhere but where an older peer's words are read."""
    found = []
    for path in sorted((ROOT / "reactor_mux").rglob("*.py")):
        relative = path.relative_to(ROOT / "reactor_mux").as_posix()
        if relative in READS_OLDER_PEERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for op, right in zip(node.ops, node.comparators, strict=True):
                    if isinstance(op, (ast.In, ast.NotIn)) and _prose(right):
                        found.append(f"{relative}:{node.lineno}: ... in {_prose(right)}")
                    literal = isinstance(right, ast.Constant) and isinstance(right.value, str)
                    if isinstance(op, (ast.Eq, ast.NotEq)) and literal and _prose(node.left):
                        found.append(f"{relative}:{node.lineno}: {_prose(node.left)} == '...'")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("startswith", "endswith", "find", "index", "count",
                                           "partition", "split")
                    and _prose(node.func.value)):  # fmt: skip
                found.append(f"{relative}:{node.lineno}: {_prose(node.func.value)}."
                             f"{node.func.attr}(...)")  # fmt: skip
    assert not found, "decisions read reason text:\n" + "\n".join(found)
