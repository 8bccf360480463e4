"""``--log-file`` and its reopening on SIGUSR1, as logrotate drives it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import MuxProcess, address_ports, parse_event, wait_until

pytestmark = pytest.mark.codec_independent


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "reactor_mux", *args],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def events_in(path: Path, name: str) -> list[dict]:  # type: ignore[type-arg]
    """The ``name`` events in a ``--log-format json`` log file (none if it is not there)."""
    if not path.exists():
        return []
    found = (parse_event(line) for line in path.read_text().splitlines())
    return [event for event in found if event is not None and event["event"] == name]


def test_the_log_goes_to_the_file_and_sigusr1_reopens_it_after_a_rotation(tmp_path: Path, echo):
    server_log, client_log = tmp_path / "server.log", tmp_path / "client.log"
    json_log = ("--log-format", "json")
    server = start("server", "--listen", "127.0.0.1:0", "--log-file", str(server_log), *json_log)
    client = None
    try:
        assert wait_until(lambda: events_in(server_log, "listening"))
        port = address_ports(events_in(server_log, "listening")[0]["address"])[0]
        rotated = tmp_path / "server.log.1"
        server_log.rename(rotated)  # what logrotate does first
        server.send_signal(signal.SIGUSR1)
        assert wait_until(lambda: events_in(server_log, "log_reopened"))
        client = start("client", "--server", f"127.0.0.1:{port}", "-L", f"0:127.0.0.1:{echo.port}",
                       "--log-file", str(client_log), *json_log)  # fmt: skip
        assert wait_until(lambda: events_in(server_log, "channel_up"))
        assert events_in(rotated, "channel_up") == []  # nothing after the signal
        assert events_in(rotated, "listening")  # nothing lost before it
        assert wait_until(lambda: events_in(client_log, "forward_up"))
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.terminate()
    for proc in (client, server):
        assert proc is not None
        _out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0 and err == ""  # nothing on stderr: it all went to the file
    assert "Traceback" not in server_log.read_text() + client_log.read_text()


def test_a_log_file_that_cannot_be_opened_is_a_one_line_error(tmp_path: Path):
    bad = tmp_path / "no-such-directory" / "x.log"
    done = subprocess.run([sys.executable, "-m", "reactor_mux", "server", "--listen",
                           "127.0.0.1:0", "--log-file", str(bad)],
                          capture_output=True, text=True, timeout=20)  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert f"cannot open --log-file {bad}: no such file or directory" in line


KEYS = {"time", "level", "role", "event", "message", "channel", "stream", "peer", "mapping",
        "reason", "address", "client", "delay", "bytes", "exception"}  # fmt: skip


def test_json_logs_are_one_object_a_line_with_stable_keys(tmp_path: Path, echo):
    server = MuxProcess(["server", "--listen", "127.0.0.1:0"])  # --log-format json
    client = None
    try:
        port = address_ports(server.wait_event("listening")["address"])[0]
        client = MuxProcess(["client", "--server", f"127.0.0.1:{port}",
                             "-L", f"0:127.0.0.1:{echo.port}", "-L", "0:127.0.0.1:1"])  # fmt: skip
        client.wait_events("forward_up", 2)
        server.wait_event("channel_up")
    finally:
        for proc in (client, server):
            if proc is not None:
                assert proc.stop() == 0
    lines = [json.loads(line) for line in server.lines + client.lines]  # every line parses
    assert all(set(line) == KEYS for line in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
               for line in lines)  # fmt: skip
    up = [line for line in server.lines if '"channel_up"' in line]
    [server_up] = [json.loads(line) for line in up]
    assert server_up["level"] == "info" and server_up["role"] == "server"
    assert server_up["peer"].startswith("127.0.0.1:") and server_up["channel"].startswith(
        "channel #1"
    )
    forwards = [json.loads(line) for line in client.lines if '"forward_up"' in line]
    assert {line["mapping"] for line in forwards} == {f"-L 0:127.0.0.1:{echo.port}",
                                                      "-L 0:127.0.0.1:1"}  # fmt: skip
    assert "Traceback" not in server.log + client.log
