"""Run ``reactor-mux`` as a child process and watch its log.

The demo and the end-to-end tests drive real processes, as a user would,
and learn ports from the log lines (``listening on ...``,
``forwarding -L ...``) rather than guessing free ports.  A thread copies the
child's stderr into a list so a test can wait for a line with a timeout.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

LISTENING = re.compile(r"listening on (\S+):(\d+)(?: and \S+)*$")
FORWARDING = re.compile(r"forwarding -([LRD]) (\S+):(\d+)(?: and \S+)? -> (\S+)$")


T = TypeVar("T")


class ReactorMuxProcess:
    """A ``python -m reactor_mux ...`` child with its stderr captured."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        nofile: int | None = None,
        python: str | None = None,
    ) -> None:
        """``nofile`` lowers the child's RLIMIT_NOFILE (for fd-exhaustion tests);
        ``python`` runs another interpreter's reactor_mux (an older checkout's venv,
        for before/after measurements)."""
        self.args = list(args)

        def limit_files() -> None:
            if nofile is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", "reactor_mux", *self.args],
            cwd=None if python is None else "/",  # not this checkout's reactor_mux: its own
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=limit_files if nofile is not None else None,
        )
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = 10.0, start: int = 0
    ) -> re.Match[str]:
        """Wait for a log line (from index ``start`` on) matching ``pattern``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        return self.wait_line(regex.search, timeout, start, f"log line matching {regex.pattern!r}")

    def wait_line(
        self, found: Callable[[str], T | None], timeout: float, start: int, what: str
    ) -> T:
        """The first non-None ``found(line)`` from line ``start`` on, waiting up to
        ``timeout`` seconds (less if the process ended and its log is read)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            index = start
            while True:
                while index < len(self._lines):
                    result = found(self._lines[index])
                    index += 1
                    if result is not None:
                        return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.proc.poll() is not None
                    and index >= len(self._lines)
                    and not self._reader.is_alive()
                ):
                    raise TimeoutError(f"no {what} within {timeout}s; log so far:\n{self.log}")
                self._cond.wait(min(remaining, 0.1))

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.lines if regex.search(line))

    def listening_port(self, timeout: float = 10.0) -> int:
        return int(self.wait_for(LISTENING, timeout).group(2))

    def forwards(
        self, count: int, timeout: float = 10.0, start: int = 0
    ) -> list[tuple[str, int, str]]:
        """Wait for ``count`` ``forwarding`` lines; return (kind, port, target) each."""
        found: list[tuple[str, int, str]] = []
        index = start
        deadline = time.monotonic() + timeout
        while len(found) < count:
            match = self.wait_for(FORWARDING, max(0.01, deadline - time.monotonic()), index)
            index = self._index_after(match, index)
            found.append((match.group(1), int(match.group(3)), match.group(4)))
        return found

    def _index_after(self, match: re.Match[str], start: int) -> int:
        lines = self.lines
        for i in range(start, len(lines)):
            if match.string == lines[i]:
                return i + 1
        return len(lines)

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)


def proc_status(pid: int, field: str) -> int:
    """A numeric field of /proc/PID/status in kB (e.g. VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_time(pid: int) -> float:
    """User + system CPU seconds consumed by a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
