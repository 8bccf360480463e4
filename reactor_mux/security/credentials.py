"""Loading secrets and the clients file, with the care ssh takes over a key.

A secret comes from ``--secret-file`` or the ``REACTOR_MUX_SECRET``
environment variable.  A file that other users can read (or that another
user owns) is refused, as ssh refuses a private key with open permissions:
whoever can read it can pose as any client.  The clients file (TOML) names
each client with its own secret and, optionally, its own allow-lists, which
replace the server's global ones for that client; it holds secrets, so the
same rule applies to it.

    [clients.alice]
    secret = "a long random string"
    allow-connect = ["db.internal:5432", "10.0.0.0/8:*"]
    allow-bind = ["127.0.0.1:8000-8999"]

Every problem is a ``CredentialsError`` whose message names the file and the
entry, for a one-line startup error.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from reactor_mux.protocol.auth import MIN_SECRET_BYTES, is_client_name
from reactor_mux.security import tomltext
from reactor_mux.security.policy import AllowList, PatternError

SECRET_VARIABLE = "REACTOR_MUX_SECRET"


class _AnyOwner:
    """``check-config`` run by root checks files that belong to the service's user;
    it accepts any owner then (the mode is still checked)."""

    accepted = False


ANY_OWNER = _AnyOwner()


class CredentialsError(ValueError):
    """A secret or clients file that cannot be used."""


def check_private(path: Path, what: str) -> None:
    """Refuse a file that someone else owns or that others may read."""
    try:
        info = path.stat()
    except OSError as exc:
        raise CredentialsError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CredentialsError(f"{what} {path} is not a regular file")
    if info.st_uid not in (os.getuid(), 0) and not ANY_OWNER.accepted:
        raise CredentialsError(
            f"{what} {path} belongs to another user (uid {info.st_uid}; this process runs "
            f"as uid {os.getuid()})"
        )
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise CredentialsError(
            f"{what} {path} is open to other users (mode {mode:04o}): chmod 600 it"
        )


def _checked_secret(secret: bytes, where: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise CredentialsError(
            f"the secret in {where} is {len(secret)} bytes; use at least {MIN_SECRET_BYTES} "
            "(a short secret can be guessed from one recorded handshake)"
        )
    return secret


def read_secret_file(path: Path) -> bytes:
    """The file's contents without surrounding white space."""
    check_private(path, "secret file")
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise CredentialsError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    return _checked_secret(secret, f"secret file {path}")


def secret_from(path: Path | None, environ: dict[str, str] | None = None) -> bytes | None:
    """The secret from ``--secret-file``, else from ``REACTOR_MUX_SECRET``, else None."""
    if path is not None:
        return read_secret_file(path)
    value = (os.environ if environ is None else environ).get(SECRET_VARIABLE)
    if value is None:
        return None
    return _checked_secret(value.strip().encode(), SECRET_VARIABLE)


@dataclass(frozen=True)
class ClientEntry:
    name: str
    secret: bytes = field(repr=False)
    connect: AllowList | None = None
    """This client's own --allow-connect list; None: the server's applies."""
    bind: AllowList | None = None
    """This client's own --allow-bind list; None: the server's applies."""


class ClientsFile:
    """The server's ``--clients-file``: a secret (and maybe a policy) per client name."""

    def __init__(self, path: Path, entries: dict[str, ClientEntry]) -> None:
        self.path = path
        self.entries = entries

    def secret_for(self, name: str) -> bytes | None:
        entry = self.entries.get(name)
        return entry.secret if entry is not None else None

    def entry(self, name: str) -> ClientEntry | None:
        return self.entries.get(name)

    def __repr__(self) -> str:
        return f"ClientsFile({self.path}, {sorted(self.entries)})"


def load_clients_file(path: Path) -> ClientsFile:
    check_private(path, "clients file")
    try:
        document = tomltext.parse(path.read_text())
    except OSError as exc:
        raise CredentialsError(f"cannot read clients file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CredentialsError(f"clients file {path} is not valid TOML: {exc}") from None
    except tomltext.TomlError as exc:
        raise CredentialsError(f"clients file {path}{exc.where}: {exc.what}") from None
    unknown = set(document) - {"clients"}
    if unknown:
        raise CredentialsError(f"clients file {path}: unknown table(s) {sorted(unknown)}")
    return clients_from_tables(
        path, document.get("clients"), lambda name, _key: f"clients file {path}, client {name!r}"
    )


Where = Callable[[str, str | None], str]
"""Where a problem with client ``name`` (in its key ``key``, if one) lies."""


def clients_from_tables(path: Path, clients: Any, where: Where) -> ClientsFile:
    """The ``[clients.NAME]`` tables of a clients file or a server's config file."""
    if not isinstance(clients, dict) or not clients:
        raise CredentialsError(f"{path} has no [clients.NAME] tables")
    entries = {name: _entry(partial(where, name), name, table) for name, table in clients.items()}
    return ClientsFile(path, entries)


def _entry(where: Callable[[str | None], str], name: str, table: Any) -> ClientEntry:
    if not is_client_name(name):
        raise CredentialsError(f"{where(None)}: a name is 1 to 64 of [0-9A-Za-z_.-] (and not OK)")
    if not isinstance(table, dict):
        raise CredentialsError(f"{where(None)}: expected a table")
    unknown = sorted(set(table) - {"secret", "allow-connect", "allow-bind"})
    if unknown:
        raise CredentialsError(f"{where(unknown[0])}: unknown key(s) {unknown}")
    secret = table.get("secret")
    if not isinstance(secret, str):
        raise CredentialsError(f'{where("secret" if "secret" in table else None)}: '
                               'needs secret = "..."')  # fmt: skip
    lists: dict[str, AllowList] = {}
    for key in ("allow-connect", "allow-bind"):
        texts = table.get(key)
        if texts is None:
            continue
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise CredentialsError(f"{where(key)}: {key} must be a list of patterns")
        try:  # given, even empty, it replaces the server's list for this client
            lists[key] = AllowList.parse(texts, f"{key} of client {name}", restrictive=True)
        except PatternError as exc:
            raise CredentialsError(f"{where(key)}: {exc}") from None
    secret_bytes = _checked_secret(secret.strip().encode(), where("secret"))
    return ClientEntry(name, secret_bytes, lists.get("allow-connect"), lists.get("allow-bind"))
