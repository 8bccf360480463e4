"""``--config`` and ``check-config``: every option is a key that means what the flag
means, the command line wins, and a bad file is named by file, line and key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from security_support import SECRET
from support import MuxProcess, echo_once

from reactor_mux import cli
from reactor_mux.service import configfile

pytestmark = pytest.mark.codec_independent

REQUIRED = {"server": 'listen = ["127.0.0.1:7000"]', "client": 'server = "127.0.0.1:7000"'}

# A value for every key of each role, as the file spells it and as the command line
# does.  A new option without a sample here fails test_every_option_is_a_key.
SAMPLES: dict[str, tuple[str, list[str]]] = {
    "listen": (
        '["127.0.0.1:7000", "[::1]:7001"]',
        ["--listen", "127.0.0.1:7000", "--listen", "[::1]:7001"],
    ),
    "gateway-ports": ("true", ["--gateway-ports"]),
    "ws-path": ('"/rmux"', ["--ws-path", "/rmux"]),
    "udp-timeout": ("30", ["--udp-timeout", "30"]),
    "max-startups": ('"5:50:20"', ["--max-startups", "5:50:20"]),
    "per-source-max-startups": ("3", ["--per-source-max-startups", "3"]),
    "per-source-netblock": ('"24:48"', ["--per-source-netblock", "24:48"]),
    "per-source-penalties": (
        '"authfail:2m min:30"',
        ["--per-source-penalties", "authfail:120 min:30"],
    ),
    "workers": ("2", ["--workers", "2"]),
    "node-id": ("3", ["--node-id", "3"]),
    "advertise": ('"127.0.0.1:7000"', ["--advertise", "127.0.0.1:7000"]),
    "proxy-protocol-from": (
        '["127.0.0.1/32", "::1"]',
        ["--proxy-protocol-from", "127.0.0.1/32", "--proxy-protocol-from", "::1"],
    ),
    "penalty-exempt": (
        '["10.0.0.0/8", "::1"]',
        ["--penalty-exempt", "10.0.0.0/8", "--penalty-exempt", "::1"],
    ),
    "max-channels": ("9", ["--max-channels", "9"]),
    "max-mappings": ('"12"', ["--max-mappings", "12"]),
    "server": ('"tunnel.example:7000"', ["--server", "tunnel.example:7000"]),
    "local-forward": (
        '["8080:db:5432", "*:9000:[::1]:22"]',
        ["-L", "8080:db:5432", "-L", "*:9000:[::1]:22"],
    ),
    "remote-forward": ('["2222:127.0.0.1:22", "1080"]', ["-R", "2222:127.0.0.1:22", "-R", "1080"]),
    "dynamic-forward": ('["127.0.0.1:1080"]', ["-D", "127.0.0.1:1080"]),
    "exit-on-forward-failure": ("true", ["--exit-on-forward-failure"]),
    "persist": ("true", ["--persist"]),
    "proxy": ('"socks5://127.0.0.1:1080"', ["--proxy", "socks5://127.0.0.1:1080"]),
    "connect-attempts": ("3", ["--connect-attempts", "3"]),
    "reconnect-min": ("0.25", ["--reconnect-min", "0.25"]),
    "reconnect-max": ("120", ["--reconnect-max", "120"]),
    "window": ('"1M"', ["--window", "1M"]),
    "max-window": ("8388608", ["--max-window", "8M"]),
    "max-frame": ('"32K"', ["--max-frame", "32768"]),
    "connect-timeout": ("3.5", ["--connect-timeout", "3.5"]),
    "handshake-timeout": ("4", ["--handshake-timeout", "4"]),
    "keepalive-interval": ("6", ["--keepalive-interval", "6"]),
    "keepalive-timeout": ("20", ["--keepalive-timeout", "20"]),
    "resume-timeout": ("0", ["--resume-timeout", "0"]),
    "max-streams": ("100", ["--max-streams", "100"]),
    "max-pending-syns": ("7", ["--max-pending-syns", "7"]),
    "max-buffer": ('"64M"', ["--max-buffer", "64M"]),
    "drain-timeout": ("30", ["--drain-timeout", "30"]),
    "log-file": ('"/var/log/rmux.log"', ["--log-file", "/var/log/rmux.log"]),
    "verbose": ("true", ["-v"]),
    "quiet": ("true", ["--quiet"]),
    "tls": ("true", ["--tls"]),
    "tls-ca": ('"/etc/rmux/ca.pem"', ["--tls-ca", "/etc/rmux/ca.pem"]),
    "tls-server-name": ('"tunnel.example"', ["--tls-server-name", "tunnel.example"]),
    "tls-fingerprint": (
        '"AB:' + "CD:" * 30 + 'EF"',
        ["--tls-fingerprint", "ab" + "cd" * 30 + "ef"],
    ),
    "tls-cert": ('"/etc/rmux/cert.pem"', ["--tls-cert", "/etc/rmux/cert.pem"]),
    "tls-key": ('"/etc/rmux/key.pem"', ["--tls-key", "/etc/rmux/key.pem"]),
    "tls-client-ca": (
        '"/etc/rmux/clients-ca.pem"',
        ["--tls-client-ca", "/etc/rmux/clients-ca.pem"],
    ),
    "tls-insecure": ("true", ["--tls-insecure"]),
    "secret-file": ('"/etc/rmux/secret"', ["--secret-file", "/etc/rmux/secret"]),
    "clients-file": ('"/etc/rmux/clients.toml"', ["--clients-file", "/etc/rmux/clients.toml"]),
    "name": ('"alice"', ["--name", "alice"]),
    "allow-connect": (
        '["db.internal:5432", "10.0.0.0/8:*"]',
        ["--allow-connect", "db.internal:5432", "--allow-connect", "10.0.0.0/8:*"],
    ),
    "allow-bind": ('["127.0.0.1:8000-8999"]', ["--allow-bind", "127.0.0.1:8000-8999"]),
    "insecure": ("true", ["--insecure"]),
    "log-format": ('"json"', ["--log-format", "json"]),
    "control": ('"/run/reactor-mux/control.sock"', ["--control", "/run/reactor-mux/control.sock"]),
    "metrics": ('"127.0.0.1:9100"', ["--metrics", "127.0.0.1:9100"]),
}


def long_options(role: str) -> set[str]:
    """The options ``--help`` shows, read from the text a user reads."""
    help_text = subprocess.run([sys.executable, "-m", "reactor_mux", role, "--help"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    found = set(re.findall(r"(?<![\w-])--([a-z][a-z-]+)", help_text))
    short = {"-L": "local", "-R": "remote", "-D": "dynamic"}
    found |= {
        configfile.FORWARD_KEYS[short[flag]] for flag in re.findall(r"\[(-[LRD]) ", help_text)
    }  # fmt: skip (usage line)
    return found - {"help", "config"}


@pytest.mark.parametrize("role", ["server", "client"])
def test_every_option_is_a_key_and_every_key_an_option(role):
    keys = set(configfile.option_keys(cli.build_parser().roles[role]))
    assert keys == long_options(role)
    assert keys <= set(SAMPLES), f"add a sample for {sorted(keys - set(SAMPLES))}"


@pytest.mark.parametrize("role", ["server", "client"])
def test_each_key_means_what_its_option_means(role, tmp_path: Path):
    """Each key, alone in a file, gives the value its flag gives on the command line."""
    keys = configfile.option_keys(cli.build_parser().roles[role])
    required_key = REQUIRED[role].split(" ")[0]
    for key, action in keys.items():
        file_value, flags = SAMPLES[key]
        path = tmp_path / f"{key}.toml"
        required = "" if key == required_key else REQUIRED[role]
        path.write_text(f"{required}\n{key} = {file_value}\n")
        from_file = cli.parse_arguments([role, "--config", str(path)])
        required_flags = [] if key == required_key else SAMPLES[required_key][1][:2]
        from_flags = cli.parse_arguments([role, *required_flags, *flags])
        assert getattr(from_file, action.dest) == getattr(from_flags, action.dest), key
        assert getattr(from_file, action.dest) != action.default, f"{key}: sample is the default"


def test_the_command_line_overrides_the_file(tmp_path: Path):
    path = tmp_path / "client.toml"
    path.write_text('server = "h:1"\nwindow = "1M"\nlocal-forward = ["1:a:1", "2:a:2"]\n'
                    'remote-forward = ["4:c:4"]\ndynamic-forward = ["1080"]\n'
                    "verbose = true\nconnect-timeout = 4\n")  # fmt: skip
    args = cli.parse_arguments(["client", "--config", str(path), "--window", "512K",
                                "-L", "3:b:3", "-q"])  # fmt: skip
    assert args.window == 512 * 1024
    # The forwards are one list: -L alone replaces the file's -L, -R and -D.
    assert [spec.text for spec in args.local] == ["3:b:3"]
    assert args.remote == [] and args.dynamic == []
    assert args.forwards_from_command_line
    unchanged = cli.parse_arguments(["client", "--config", str(path)])
    assert [spec.text for spec in unchanged.remote] == ["4:c:4"]
    assert not unchanged.forwards_from_command_line
    assert args.quiet and not args.verbose
    assert args.connect_timeout == 4 and args.server == ("h", 1)


def test_the_forms_of_this_stop_in_a_config_file(tmp_path: Path):
    """UDP and Unix-socket forwards, a WebSocket server URL and a proxy are written in
    a config file as on the command line (issues 23 and 24)."""
    path = tmp_path / "client.toml"
    path.write_text('server = "wss://tunnel.example/rmux"\nproxy = "socks5://127.0.0.1:1080"\n'
                    'local-forward = ["udp:5353:10.0.0.53:53", "6379:/run/redis.sock"]\n'
                    'remote-forward = ["udp:0:127.0.0.1:514"]\nudp-timeout = 30\n')  # fmt: skip
    args = cli.parse_arguments(["client", "--config", str(path)])
    udp, unix = args.local
    assert udp.udp and (udp.target_host, udp.target_port) == ("10.0.0.53", 53)
    assert unix.target_path == "/run/redis.sock" and args.remote[0].udp
    assert args.server == ("tunnel.example", 443) and args.tls  # wss: TLS on 443
    assert args.websocket.path == "/rmux" and str(args.proxy) == "socks5://127.0.0.1:1080"
    assert args.udp_timeout == 30


def test_relative_paths_are_relative_to_the_file(tmp_path: Path):
    path = tmp_path / "etc" / "client.toml"
    path.parent.mkdir()
    path.write_text('server = "h:1"\nsecret-file = "secret"\ntls-ca = "~/ca.pem"\n')
    args = cli.parse_arguments(["client", "--config", str(path), "-D", "1080"])
    assert args.secret_file == tmp_path / "etc" / "secret"
    assert args.tls_ca == Path("~/ca.pem").expanduser()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor_mux", *args],
                          capture_output=True, text=True, timeout=20)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ('server = "h:1"\n\nwindoww = "1M"\n', 3, "unknown key 'windoww' (did you mean 'window'?)"),
        (
            'server = "h:1"\nwindow = true\n',
            2,
            "window must be a string or a number, not true/false",
        ),
        ('server = "h:1"\n# c\ntls = "yes"\n', 3, "tls must be true or false, not str"),
        ('server = "h:1"\nlocal-forward = "1:h:2"\n', 2, "local-forward must be a list"),
        ('server = "h:1"\nlocal-forward = ["1:h"]\n', 2, "local-forward: "),
        ('server = "h:1"\nmax-streams = 0\n', 2, "max-streams: max streams 0 is outside"),
        ('server = "h:1"\n"window" = "1Q"\n', 2, "window: '1Q' is not a size"),
        ('server = "h:1"\nL = ["1:h:2"]\n', 2, "unknown key 'L' (-L is 'local-forward' in a"),
        ('server = "h:1"\nsecret-file = "~no-such-user-x/s"\n', 2, "secret-file: "),
    ],
)
def test_a_bad_key_or_value_names_the_file_line_and_key(tmp_path: Path, body, line, message):
    path = tmp_path / "client.toml"
    path.write_text(body)
    started = run("client", "--config", str(path), "-D", "0")
    assert started.returncode == 2
    [error] = started.stderr.strip().splitlines()
    assert f"{path}:{line}: {message}" in error, error
    checked = run("check-config", str(path))
    assert checked.returncode == 1 and checked.stdout == ""
    assert f"{path}:{line}: {message}" in checked.stderr


def test_check_config_prints_settings_that_read_back_the_same(tmp_path: Path):
    path = tmp_path / "client.toml"
    path.write_text('server = "tunnel.example:7000"\nlocal-forward = ["8080:db:5432"]\n'
                    'max-buffer = "32M"\nkeepalive-interval = 5\ntls = true\n')  # fmt: skip
    first = run("check-config", str(path))
    assert first.returncode == 0, first.stderr
    assert 'max-buffer = "32M"' in first.stdout and "keepalive-interval = 5" in first.stdout
    assert 'window = "256K"' in first.stdout  # defaults are shown too
    printed = tmp_path / "printed.toml"
    printed.write_text(first.stdout)
    second = run("check-config", str(printed))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[1:] == first.stdout.splitlines()[1:]


def test_check_config_finds_problems_the_parser_alone_cannot(tmp_path: Path):
    path = tmp_path / "server.toml"
    path.write_text('listen = ["0.0.0.0:7000"]\n')
    checked = run("check-config", str(path))
    assert checked.returncode == 1
    assert "refusing to listen on 0.0.0.0:7000 without authenticating clients" in checked.stderr
    path.write_text('listen = ["127.0.0.1:7000"]\nkeepalive-interval = 10\nkeepalive-timeout = 5\n')
    assert "--keepalive-timeout must be longer" in run("check-config", str(path)).stderr
    path.write_text("window = 3\n")
    assert "cannot tell whose file this is" in run("check-config", str(path)).stderr
    path.write_text('listen = ["127.0.0.1:7000"]\nadvertise = "127.0.0.1:7000"\n')
    checked = run("check-config", str(path))
    assert checked.returncode == 1 and "--advertise needs --node-id" in checked.stderr


def clients_config(path: Path, port: int, mode: int) -> None:
    path.write_text(f'listen = ["127.0.0.1:{port}"]\n\n[clients.alice]\n'
                    f'secret = "{SECRET}"\nallow-connect = ["127.0.0.1:*"]\n')  # fmt: skip
    path.chmod(mode)


def test_a_servers_clients_can_live_in_its_config_file(tmp_path: Path, echo):
    path = tmp_path / "server.toml"
    clients_config(path, 0, 0o644)
    opened = run("check-config", str(path))
    assert opened.returncode == 1 and "is open to other users (mode 0644)" in opened.stderr
    clients_config(path, 0, 0o600)
    checked = run("check-config", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "[clients.alice]" in checked.stdout and SECRET not in checked.stdout
    server = MuxProcess(["server", "--config", str(path)])
    client = None
    try:
        port = server.listening_port()
        client = MuxProcess(["client", "--server", f"127.0.0.1:{port}", "--name", "alice",
                                    "-L", f"0:127.0.0.1:{echo.port}"],
                                   env={"REACTOR_MUX_SECRET": SECRET})  # fmt: skip
        [(_, local, _)] = client.forwards(1, timeout=15)
        server.wait_event("channel_up", client="alice")
        assert echo_once(local, b"through") == b"through"
    finally:
        for proc in (client, server):
            if proc is not None:
                assert proc.stop() == 0


def test_an_empty_allow_list_and_a_file_others_may_change_are_refused(tmp_path: Path):
    """``allow-connect = []`` reads as "nothing" but would mean "anything"; a file
    others can write could open the server to anyone at the next reload."""
    path = tmp_path / "server.toml"
    path.write_text('listen = ["127.0.0.1:7000"]\nallow-connect = []\n')
    checked = run("check-config", str(path))
    assert checked.returncode == 1
    assert f"{path}:2: allow-connect = [] would mean no restriction at all" in checked.stderr
    path.write_text('listen = ["127.0.0.1:7000"]\n')
    path.chmod(0o664)
    checked = run("check-config", str(path))
    assert checked.returncode == 1
    assert f"config file {path} may be changed by other users (mode 0664)" in checked.stderr
    path.chmod(0o644)
    assert run("check-config", str(path)).returncode == 0


@pytest.mark.parametrize(
    ("table", "line", "message"),
    [
        (
            'secret = "x"\n\nallow-conect = ["a:1"]\n',
            7,
            "client 'office': unknown key(s) ['allow-conect']",
        ),
        ('allow-bind = "127.0.0.1:1"\nsecret = "x"\n', 5, "allow-bind must be a list of patterns"),
        ('secret = "short"\n', 5, "client 'office' is 5 bytes; use at least 16"),
        ('allow-connect = ["*"]\n', 4, "client 'office': needs secret = \"...\""),
    ],
)
def test_a_problem_in_a_clients_table_names_the_line_of_its_key(
    tmp_path: Path, table, line, message
):
    path = tmp_path / "server.toml"
    path.write_text(f'listen = ["127.0.0.1:7000"]\n\n\n[clients.office]\n{table}')
    path.chmod(0o600)
    checked = run("check-config", str(path))
    assert checked.returncode == 1
    assert f"{path}:{line}: " in checked.stderr and message in checked.stderr, checked.stderr
