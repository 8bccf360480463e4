"""Installation where no compiler works: it must succeed and run the pure-Python codec.

A fresh venv installs a clean copy of the source with ``CC=false`` (every
compile fails), then runs the demo and checks the backend line.  It takes
about half a minute (venv, pip, build isolation), so it runs once: in the
suite's ``REACTOR_MUX_CODEC=c`` pass, not again in the ``python`` pass.

Also here, and quick: build_codec.py gives cffi the header's own declarations.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def clean_copy(target: pathlib.Path) -> None:
    """The working tree minus ignored files (no build/ or compiled module to reuse)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
    )
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            if name and (ROOT / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target / name)
        return
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "build",
        "*.so",
        "*.o",
        "__pycache__",
        "*.egg-info",
        ".hypothesis",
        ".pytest_cache",
        "_ccodec.c",
    )
    shutil.copytree(ROOT, target, ignore=ignore, dirs_exist_ok=True)


@pytest.mark.skipif(
    os.environ.get("REACTOR_MUX_CODEC") == "python",
    reason="runs once, in the REACTOR_MUX_CODEC=c pass",
)
def test_install_without_a_compiler_runs_pure_python(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    clean_copy(source)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {key: value for key, value in os.environ.items() if key != "REACTOR_MUX_CODEC"}
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-cache-dir", str(source)],
        env={**env, "CC": "false"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert not list(venv.glob("lib/python*/site-packages/reactor_mux/codec/_ccodec*"))

    command = str(venv / "bin" / "reactor-mux")
    version = subprocess.run([command, "--version"], env=env, capture_output=True, text=True)
    assert version.returncode == 0 and "(codec: python)" in version.stdout

    demanded = subprocess.run([command, "--version"], env={**env, "REACTOR_MUX_CODEC": "c"},
                              capture_output=True, text=True)  # fmt: skip
    assert demanded.returncode == 2
    assert "REACTOR_MUX_CODEC=c but the compiled codec is unavailable" in demanded.stderr
    assert "Traceback" not in demanded.stderr

    demo = subprocess.run([command, "demo", "--size", "4"], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "codec python" in demo.stdout and "demo passed" in demo.stdout


def test_cdef_is_the_headers_public_region():
    """build_codec.py declares to cffi exactly what csrc/rmux_codec.h declares to C:
    every declaration of the header lies between its cdef-begin and cdef-end
    markers, and outside them there are only comments and preprocessor lines."""
    spec = importlib.util.spec_from_file_location("build_codec", ROOT / "build_codec.py")
    assert spec is not None and spec.loader is not None
    build_codec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_codec)  # runs cffi's cdef() on the region: it must parse
    header = (ROOT / "csrc" / "rmux_codec.h").read_text()
    assert build_codec.CDEF in header
    outside = header.replace(build_codec.CDEF, "")
    outside = re.sub(r"/\*.*?\*/", "", outside, flags=re.DOTALL)
    stray = [line for line in outside.splitlines() if line.strip() and not line.startswith("#")]
    assert not stray, "declarations outside the cdef region are hidden from Python"
    assert "rmux_decode" in build_codec.CDEF and "rmux_tx_sent" in build_codec.CDEF
