"""The demo, as README's first command runs it (smaller, to keep the suite quick)."""

import subprocess
import sys


def test_demo_runs_and_checks_every_byte():
    result = subprocess.run(
        [sys.executable, "-m", "reactor_mux", "demo", "--size", "8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" ok ") == 3
    assert "demo passed" in result.stdout
