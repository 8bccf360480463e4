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
                assert top not in FORBIDDEN_IN_CORE, f"{path.name} imports {name}"
                if top == "reactor_mux":
                    assert name.startswith(("reactor_mux.protocol", "reactor_mux.codec")) or (
                        name == "reactor_mux"
                    ), f"{path.name} imports {name}, outside the core"


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


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
