"""The command line: usage errors are one line with status 2, no tracebacks."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest
from support import MuxProcess

from reactor_mux import cli, codec

pytestmark = pytest.mark.codec_independent


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reactor_mux", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version_names_the_codec():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip().startswith("reactor-mux 0.")
    assert f"(codec: {codec.BACKEND})" in result.stdout


@pytest.mark.parametrize("policy", ["c", "python"])
def test_codec_policy_variable_selects_the_backend(policy):
    env = {**os.environ, "REACTOR_MUX_CODEC": policy}
    result = subprocess.run(
        [sys.executable, "-m", "reactor_mux", "--version"], capture_output=True, text=True, env=env
    )
    if policy == "c" and result.returncode != 0:
        pytest.fail(f"REACTOR_MUX_CODEC=c but the compiled codec is missing: {result.stderr}")
    assert result.returncode == 0 and f"(codec: {policy})" in result.stdout


def test_unknown_codec_policy_is_refused():
    env = {**os.environ, "REACTOR_MUX_CODEC": "fortran"}
    result = subprocess.run(
        [sys.executable, "-m", "reactor_mux", "--version"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "reactor-mux: error: REACTOR_MUX_CODEC='fortran': expected 'c', 'python' or 'auto'"
    ]


def test_installed_command_exists():
    command = pathlib.Path(sys.executable).parent / "reactor-mux"
    if not command.exists():
        pytest.skip("reactor-mux is not installed next to this interpreter")
    result = subprocess.run([str(command), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "codec:" in result.stdout


BAD = [
    [],
    ["nonsense"],
    ["server"],
    ["server", "--listen", "nohostport"],
    ["server", "--listen", "127.0.0.1:99999"],
    ["server", "--listen", "127.0.0.1:1", "--window", "12"],
    ["server", "--listen", "127.0.0.1:1", "--window", "lots"],
    ["client"],
    ["client", "--server", "127.0.0.1:1"],
    ["client", "--server", "127.0.0.1:0", "-L", "1:a:2"],
    ["client", "--server", "127.0.0.1:1", "-L", "8080"],
    ["client", "--server", "127.0.0.1:1", "-L", "8080:host"],
    ["client", "--server", "127.0.0.1:1", "-L", "x:8080:host:80"],
    ["client", "--server", "127.0.0.1:1", "-L", "8080:host:0"],
    ["client", "--server", "127.0.0.1:1", "-L", "8080:host:65536"],
    ["client", "--server", "127.0.0.1:1", "-L", "8080:bad host:80"],
    ["client", "--server", "127.0.0.1:1", "-L", "[::1:8080:host:80"],
    ["client", "--server", "127.0.0.1:1", "-L", "8080:[nothex]:80"],
    ["client", "--server", "127.0.0.1:1", "-L", "a:b:c:d:e"],
    ["client", "--server", "127.0.0.1:1", "-R", "1:2"],
    ["client", "--server", "127.0.0.1:1", "-L", "1:h:2", "--reconnect-min", "-1"],
    [
        "client",
        "--server",
        "127.0.0.1:1",
        "-L",
        "1:h:2",
        "--reconnect-min",
        "5",
        "--reconnect-max",
        "1",
    ],
    ["client", "--server", "127.0.0.1:1", "-L", "1:h:2", "-v", "-q"],
    ["client", "--server", "127.0.0.1:1", "-L", "udp:1:h:2", "--udp-timeout", "0.001"],
    ["client", "--server", "127.0.0.1:1", "-L", "udp:1:h"],
    ["client", "--server", "127.0.0.1:1", "-L", "1:h:2", "--proxy", "ftp://proxy"],
    ["client", "--server", "ftp://host/path", "-L", "1:h:2"],
    ["server", "--listen", "127.0.0.1:1", "--ws-path", "no-slash"],
    ["server", "--listen", "127.0.0.1:1", "--allow-connect", "udp:127.0.0.1:53"],
]


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) or "(nothing)" for a in BAD])
def test_bad_arguments_give_one_line_and_status_2(args, capsys):
    """In-process (the parser and checks are plain functions); one real process below."""
    try:
        status = cli.main(args)
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("reactor-mux") and "error:" in lines[0]
    assert lines[0].endswith("--help)"), "the line says where to look"


@pytest.mark.parametrize("args", [BAD[3], BAD[9], BAD[-2]], ids=lambda a: " ".join(a))
def test_bad_arguments_as_a_real_process(args):
    result = run(*args)
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_listen_port_in_use_is_a_one_line_startup_error():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = run("server", "--listen", f"127.0.0.1:{port}")
    finally:
        taken.close()
    assert result.returncode == 1
    assert f"cannot start server: cannot listen on 127.0.0.1:{port}: address already in use" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_client_whose_only_port_is_taken_exits_1():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        result = run(
            "client", "--server", "127.0.0.1:1", "-L", f"{taken.getsockname()[1]}:127.0.0.1:80"
        )
    finally:
        taken.close()
    assert result.returncode == 1
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly(signum):
    proc = MuxProcess(["server", "--listen", "127.0.0.1:0"])
    proc.listening_port()
    proc.signal(signum)
    assert proc.proc.wait(10) == 0
    proc.stop()
    assert proc.events("draining", reason=signum.name) and proc.events("stopped")
    assert "Traceback" not in proc.log


def test_quiet_logs_errors_only_and_verbose_logs_streams(echo):
    quiet = MuxProcess(["server", "--listen", "127.0.0.1:0", "-q"])
    verbose = MuxProcess(["server", "--listen", "127.0.0.1:0", "-v"])
    try:
        port = verbose.listening_port()
        client = MuxProcess(
            ["client", "--server", f"127.0.0.1:{port}", "-L", f"0:127.0.0.1:{echo.port}"]
        )
        listen = client.forwards(1)[0][1]
        with socket.create_connection(("127.0.0.1", listen)) as conn:
            conn.sendall(b"x")
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(1) == b"x"
        verbose.wait_event("stream_closed", stream=1)
        client.stop()
    finally:
        quiet.stop()
        verbose.stop()
    assert quiet.lines == [], quiet.log


def test_python_dash_m_and_environment():
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    result = subprocess.run(
        [sys.executable, "-m", "reactor_mux", "--help"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0
    assert "server" in result.stdout and "client" in result.stdout and "demo" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (("client", "--server", "127.0.0.1:1", "-L", "-1:h:2"),
         "argument -L: bad -L '-1:h:2': port is not a decimal number: '-1'"),
        (("client", "--server", "127.0.0.1:1", "-R", "-5"),
         "argument -R: bad -R '-5': port is not a decimal number: '-5'"),
        (("client", "--server", "127.0.0.1:1", "-D", "-1080"),
         "argument -D: bad -D '-1080': port is not a decimal number: '-1080'"),
        (("client", "--server", "127.0.0.1:1", "-D", "70000"),
         "argument -D: bad -D '70000': port 70000 is outside 0..65535"),
        (("demo", "--size", "0"), "argument --size: size 0 is outside 1..4096"),
        (("demo", "--size", "-5"), "argument --size: size is not a decimal number: '-5'"),
    ],
)  # fmt: skip
def test_negative_and_out_of_range_values_get_the_one_line_spec_error(args, message):
    result = run(*args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert message in line and "Traceback" not in result.stderr
