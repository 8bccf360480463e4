"""Secrets and the clients file: permissions, sizes, and what a clients file may say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from certs import secret_file

from reactor_mux.security.credentials import (
    SECRET_VARIABLE,
    CredentialsError,
    load_clients_file,
    read_secret_file,
    secret_from,
)

pytestmark = pytest.mark.codec_independent

SECRET = "sixteen or more characters"


def test_a_private_secret_file_is_read_without_its_newline(tmp_path: Path):
    assert read_secret_file(secret_file(tmp_path, "s", SECRET)) == SECRET.encode()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, mode: int):
    with pytest.raises(CredentialsError, match=f"mode {mode:04o}\\): chmod 600 it"):
        read_secret_file(secret_file(tmp_path, "s", SECRET, mode))


def test_short_missing_and_environment_secrets(tmp_path: Path):
    with pytest.raises(CredentialsError, match="at least 16"):
        read_secret_file(secret_file(tmp_path, "s", "short"))
    with pytest.raises(CredentialsError, match="cannot read"):
        read_secret_file(tmp_path / "missing")
    assert secret_from(None, {SECRET_VARIABLE: SECRET + "\n"}) == SECRET.encode()
    assert secret_from(None, {}) is None
    with pytest.raises(CredentialsError, match=SECRET_VARIABLE):
        secret_from(None, {SECRET_VARIABLE: "short"})


def test_a_clients_file(tmp_path: Path):
    path = secret_file(tmp_path, "clients.toml", f"""
[clients.alice]
secret = "{SECRET}"
allow-connect = ["db.internal:5432"]

[clients.bob]
secret = "{SECRET} bob"
allow-connect = []
""")  # fmt: skip
    clients = load_clients_file(path)
    assert clients.secret_for("alice") == SECRET.encode()
    assert clients.secret_for("mallory") is None
    alice, bob = clients.entry("alice"), clients.entry("bob")
    assert alice is not None and bob is not None
    assert alice.connect is not None and alice.connect.check_target("db.internal", 5432) is None
    assert alice.bind is None  # the server's own --allow-bind applies
    assert bob.connect is not None and bob.connect.check_target("db.internal", 5432) is not None
    assert SECRET not in repr(clients) and SECRET not in repr(alice)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[clients.alice]\n", "needs secret"),
        ('[clients.alice]\nsecret = "short"\n', "at least 16"),
        (f'[clients.OK]\nsecret = "{SECRET}"\n', "a name is"),
        (f'[clients.alice]\nsecret = "{SECRET}"\ncolour = "red"\n', "unknown key"),
        (f'[clients.alice]\nsecret = "{SECRET}"\nallow-bind = ["nonsense"]\n', "HOST:PORTS"),
        ("[servers.x]\n", "unknown table"),
        ("not toml at all [", "not valid TOML"),
        ("", "no .clients.NAME. tables"),
    ],
)
def test_a_bad_clients_file_says_where(tmp_path: Path, text: str, why: str):
    path = secret_file(tmp_path, "clients.toml", text)
    with pytest.raises(CredentialsError, match=why) as raised:
        load_clients_file(path)
    assert str(path) in str(raised.value)


def test_a_clients_file_others_can_read_is_refused(tmp_path: Path):
    path = secret_file(tmp_path, "clients.toml", f'[clients.a]\nsecret = "{SECRET}"\n', 0o644)
    with pytest.raises(CredentialsError, match="open to other users"):
        load_clients_file(path)
    os.chmod(path, 0o600)
    load_clients_file(path)
