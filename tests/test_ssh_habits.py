"""ssh's habits on the client's command line (issue 23): ``-N``/``-T``, a default
port, ``-o KEY=VALUE``, host aliases from the per-user hosts file, and ``-f``.

The parsing tests read what ``parse_arguments`` makes of a command line; the
others run real processes and check the bytes that go through.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from certs import secret_file
from security_support import SECRET
from support import PortHolder, Tunnel, echo_once, wait_until

from reactor_mux.cli.parser import checked, parse_arguments
from reactor_mux.roles.specs import DEFAULT_CHANNEL_PORT
from reactor_mux.service.configfile import ConfigError

pytestmark = pytest.mark.codec_independent


@pytest.fixture
def hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Write the per-user hosts file (under a temporary XDG_CONFIG_HOME); returns the
    function that writes it."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))

    def write(text: str) -> Path:
        path = tmp_path / "reactor-mux" / "hosts.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)
        return path

    return write


# ------------------------------------------------------------------ parsing


def test_n_and_t_are_accepted_and_change_nothing():
    plain = parse_arguments(["client", "--server", "h:1", "-L", "1:h:2"])
    ssh_like = parse_arguments(["client", "-N", "-T", "--server", "h:1", "-L", "1:h:2"])
    assert (ssh_like.server, ssh_like.local) == (plain.server, plain.local)


def test_server_and_listen_without_a_port_use_the_default_port():
    assert parse_arguments(["client", "--server", "tunnel.example", "-L", "1:h:2"]).server == (
        "tunnel.example", DEFAULT_CHANNEL_PORT,
    )  # fmt: skip
    assert parse_arguments(["client", "--server", "[::1]", "-L", "1:h:2"]).server == (
        "::1", DEFAULT_CHANNEL_PORT,
    )  # fmt: skip
    assert parse_arguments(["server", "--listen", "127.0.0.1"]).listen == [
        ("127.0.0.1", DEFAULT_CHANNEL_PORT)
    ]


def test_o_sets_a_key_over_the_config_file_and_under_the_options(tmp_path):
    text = 'server = "h:1"\nkeepalive-interval = 5\nlocal-forward = ["1:h:2"]\n'
    config = secret_file(tmp_path, "client.toml", text)
    args = parse_arguments(["client", "--config", str(config), "-o", "keepalive-interval=7",
                            "-o", "persist=yes"])  # fmt: skip
    assert (args.keepalive_interval, args.persist) == (7.0, True)
    args = parse_arguments(["client", "--config", str(config), "-o", "keepalive-interval=7",
                            "--keepalive-interval", "9"])  # fmt: skip
    assert args.keepalive_interval == 9.0
    args = parse_arguments(["client", "--config", str(config), "-o", "local-forward=3:h:4"])
    assert [spec.text for spec in args.local] == ["3:h:4"]


@pytest.mark.parametrize(
    ("pair", "why"),
    [
        ("keepalive-interval", "expected KEY=VALUE"),
        ("nosuch=1", "unknown key 'nosuch'"),
        ("persist=maybe", "persist takes yes or no"),
        ("keepalive-interval=soon", "not a number of seconds"),
        ("config=x.toml", "unknown key 'config'"),
    ],
)
def test_a_bad_o_is_a_one_line_error_naming_it(pair, why):
    with pytest.raises(ConfigError, match=re.escape(why)) as raised:
        parse_arguments(["client", "--server", "h:1", "-L", "1:h:2", "-o", pair])
    assert str(raised.value).startswith(f"-o {pair}")


def test_a_host_is_looked_up_in_the_hosts_file(hosts, tmp_path):
    path = hosts('[office]\nserver = "tunnel.example:7001"\nsecret-file = "office.secret"\n'
                 'local-forward = ["5433:db:5432"]\nkeepalive-interval = 4\n'
                 '[bastion]\npersist = true\n')  # fmt: skip
    office = parse_arguments(["client", "office", "--keepalive-interval", "6"])
    assert office.server == ("tunnel.example", 7001)
    assert office.secret_file == path.parent / "office.secret"  # beside the hosts file
    assert [spec.text for spec in office.local] == ["5433:db:5432"]
    assert office.keepalive_interval == 6.0  # the command line over the file
    replaced = parse_arguments(["client", "office", "-L", "1:h:2"])
    assert [spec.text for spec in replaced.local] == ["1:h:2"]
    bastion = parse_arguments(["client", "bastion", "-L", "1:h:2"])  # no server key: the name
    assert (bastion.server, bastion.persist) == (("bastion", DEFAULT_CHANNEL_PORT), True)


def test_w_clears_a_hosts_forwards_as_sshs_clear_all_forwardings(hosts):
    hosts('[office]\nserver = "tunnel.example"\nlocal-forward = ["5433:db:5432"]\n')
    args = parse_arguments(["client", "office", "-W", "db:5432"])
    assert (args.local, args.stdio) == ([], ("db", 5432))


def test_a_host_with_dots_in_its_name_is_found_either_way(hosts):
    hosts('[db]\nserver = "db-tunnel:7001"\n[db.example]\nserver = "dotted:7002"\n'
          '["quoted.example"]\nserver = "quoted:7003"\n')  # fmt: skip
    for name, server in (("db", ("db-tunnel", 7001)), ("db.example", ("dotted", 7002)),
                         ("quoted.example", ("quoted", 7003))):  # fmt: skip
        assert parse_arguments(["client", name, "-L", "1:h:2"]).server == server


def test_a_name_that_is_no_host_is_the_server(hosts):
    hosts('[office]\nserver = "tunnel.example"\n')
    args = parse_arguments(["client", "gateway.example:7100", "-L", "1:h:2"])
    assert args.server == ("gateway.example", 7100)
    with pytest.raises(ConfigError, match="--server names the server"):
        parse_arguments(["client", "elsewhere", "--server", "h:1", "-L", "1:h:2"])
    with pytest.raises(ConfigError, match="not a server address"):
        parse_arguments(["client", "bad:port", "-L", "1:h:2"])


def test_a_misspelt_host_with_nothing_to_forward_is_named_with_the_host_meant(hosts):
    """``client offce`` is a server named offce, as ssh would take it; with nothing to
    forward it cannot be what was meant, and the error says which host was."""
    hosts('[office]\nserver = "tunnel.example"\nlocal-forward = ["1:h:2"]\n[db.main]\n')
    with pytest.raises(
        ConfigError, match=r"'offce' is not a host in .*\(did you mean 'office'\?\)"
    ):
        checked(parse_arguments(["client", "offce"]))
    with pytest.raises(ConfigError, match=r"did you mean 'db.main'\?"):
        checked(parse_arguments(["client", "db.mian"]))
    with pytest.raises(ConfigError, match=r"^nothing to forward"):
        checked(parse_arguments(["client", "unlike-anything"]))
    assert parse_arguments(["client", "offce", "-L", "1:h:2"]).server == ("offce", 7000)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[office]\nnosuch = 1\n", "unknown key 'nosuch'"),
        ("office = 3\n", "office must be a table"),
        ("[office\n", "not valid TOML"),
    ],
)
def test_a_bad_hosts_file_names_the_file_and_line(hosts, text, why):
    path = hosts(text)
    with pytest.raises(ConfigError, match=re.escape(why)) as raised:
        parse_arguments(["client", "office", "-L", "1:h:2"])
    assert str(path) in str(raised.value)


def test_a_key_set_twice_is_named_with_its_line(hosts, tmp_path):
    path = hosts('[office]\nserver = "a"\nkeepalive-interval = 4\nkeepalive-interval = 5\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}:4: keepalive-interval is set twice")):
        parse_arguments(["client", "office", "-L", "1:h:2"])
    config = secret_file(tmp_path, "server.toml", 'listen = ["127.0.0.1"]\n[clients.a]\n'
                         'secret = "x"\n[clients.a]\nsecret = "y"\n')  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape(f"{config}:4: [clients.a] is declared twice")):
        parse_arguments(["server", "--config", str(config)])


def test_a_hosts_file_others_may_change_is_refused(hosts):
    hosts('[office]\nserver = "tunnel.example"\n').chmod(0o622)
    with pytest.raises(ConfigError, match="may be changed by other users"):
        parse_arguments(["client", "office", "-L", "1:h:2"])


# ------------------------------------------------------------ real processes


def reactor_mux(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A client started as a shell would: its log to ``log``, so that a background
    child holding it open does not keep a pipe open for the test to wait on."""
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "reactor_mux", *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=sink, env={**os.environ, **env})  # fmt: skip


def test_a_host_alias_carries_data_end_to_end(tmp_path, echo):
    secret = secret_file(tmp_path, "secret", SECRET)
    tunnel = Tunnel(server_args=("--secret-file", str(secret)))
    try:
        with PortHolder() as ports:
            local = ports.take()
        hosts = tmp_path / "xdg" / "reactor-mux" / "hosts.toml"
        hosts.parent.mkdir(parents=True)
        hosts.write_text(f'[office]\nserver = "127.0.0.1:{tunnel.server_port}"\n'
                         f'secret-file = "{secret}"\n'
                         f'local-forward = ["{local}:127.0.0.1:{echo.port}"]\n')  # fmt: skip
        hosts.chmod(0o600)
        log = tmp_path / "client.log"
        xdg = {"XDG_CONFIG_HOME": str(hosts.parents[1])}
        client = reactor_mux("client", "office", "-N", env=xdg, log=log)
        try:
            assert wait_until(lambda: f"forwarding -L 127.0.0.1:{local}" in log.read_text(), 15)
            assert echo_once(local, b"through office" * 1000) == b"through office" * 1000
        finally:
            client.send_signal(signal.SIGTERM)
            assert client.wait(10) == 0
    finally:
        tunnel.close()


def test_f_goes_to_the_background_once_every_forward_is_up(tmp_path, echo):
    tunnel = Tunnel()
    control = tmp_path / "control.sock"
    log = tmp_path / "client.log"
    child = None
    try:
        parent = reactor_mux("client", f"127.0.0.1:{tunnel.server_port}", "-f", "-N",
                             "-L", f"0:127.0.0.1:{echo.port}", "-R", f"0:127.0.0.1:{echo.port}",
                             "--control", str(control), env={}, log=log)  # fmt: skip
        assert parent.wait(15) == 0
        text = log.read_text()
        assert text.count("forwarding -") == 2, text  # both were up when the parent left
        status = subprocess.run([sys.executable, "-m", "reactor_mux", "status", "--json",
                                 "--control", str(control)],
                                capture_output=True, text=True, timeout=20, check=True)  # fmt: skip
        child = int(re.search(r'"pid": (\d+)', status.stdout)[1])  # type: ignore[index]
        assert child != parent.pid
        [local] = re.findall(r"forwarding -L 127\.0\.0\.1:(\d+)", text)
        [remote] = re.findall(r"forwarding -R 127\.0\.0\.1:(\d+)", text)
        for port in (int(local), int(remote)):
            assert echo_once(port, b"in the background") == b"in the background"
        assert os.getsid(child) == child  # its own session: no terminal to lose
        os.kill(child, signal.SIGTERM)
        assert wait_until(lambda: "stopped" in log.read_text(), 15)
        child = None
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
        tunnel.close()


def test_f_exits_non_zero_when_a_forward_fails(tmp_path, echo):
    tunnel = Tunnel()
    try:
        holder, _ = tunnel.client("-R", f"0:127.0.0.1:{echo.port}")
        taken = int(holder.wait_event("forward_up")["address"].rsplit(":", 1)[1])
        log = tmp_path / "client.log"
        parent = reactor_mux("client", f"127.0.0.1:{tunnel.server_port}", "-f",
                             "-R", f"{taken}:127.0.0.1:{echo.port}", env={}, log=log)  # fmt: skip
        assert parent.wait(15) == 1, log.read_text()
        text = log.read_text()
        assert "address already in use" in text and "; exiting (-f)" in text, text
    finally:
        tunnel.close()


def test_f_exits_255_when_the_server_refuses_the_client(tmp_path, echo, secret):
    tunnel = Tunnel(server_args=("--secret-file", str(secret)))
    try:
        log = tmp_path / "client.log"
        parent = reactor_mux("client", f"127.0.0.1:{tunnel.server_port}", "-f",
                             "-L", f"0:127.0.0.1:{echo.port}", env={}, log=log)  # fmt: skip
        assert parent.wait(15) == 255, log.read_text()
    finally:
        tunnel.close()
