"""``--config PATH``: a role's command-line options, written as a TOML file.

Every long option is a key of the same name (``max-buffer = "16M"``,
``listen = ["0.0.0.0:7000"]``, ``tls = true``); the short-only forwards are
``local-forward``, ``remote-forward`` and ``dynamic-forward``, lists in the
command line's syntax.  A server's file may also hold its clients, as
``[clients.NAME]`` tables in the form of the clients file.

The keys are read off the role's argparse parser, so a new option is a new
key without anyone remembering to add it, and each value goes through the
option's own converter: a file can say nothing the command line could not.
A value given on the command line replaces the file's (a list as a whole).
Relative paths in the file are relative to the file, which is what a unit
file or a container expects.  Every problem is a ``ConfigError`` naming the
file, the line and the key.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from reactor_mux.io.netutil import describe_error
from reactor_mux.protocol.syntax import format_host_port
from reactor_mux.roles.specs import ForwardSpec
from reactor_mux.security import tomltext
from reactor_mux.security.credentials import (
    ClientsFile,
    CredentialsError,
    check_private,
    clients_from_tables,
)
from reactor_mux.security.policy import Pattern

FORWARD_KEYS = {"local": "local-forward", "remote": "remote-forward", "dynamic": "dynamic-forward"}
"""The keys of the options that have only a short flag (``-L``, ``-R``, ``-D``)."""

CLIENTS_TABLE = "clients"
"""A server's ``[clients.NAME]`` tables: each client's secret and allow-lists."""

_NOT_KEYS = (
    "help",
    "config",
    "overrides",
    "destination",
    "background",
    "no_command",
    "no_tty",
    "stdio",
)
"""Options that cannot be keys: a file cannot name another file to read, nor hold
what only a command line says (``-o``, a host, ``-f``, ssh's no-op ``-N``/``-T``)."""

HOSTS_FILE = "hosts.toml"
"""Per-user host aliases: one table per host, in the user's config directory."""

_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, line and key."""


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    values: dict[str, Any]
    """Each given option's argparse ``dest`` and its value, as argparse would give it."""
    clients: ClientsFile | None


def option_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every key a role's config file may hold, with the option it stands for."""
    keys: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.dest in _NOT_KEYS or not action.option_strings:
            continue
        long_names = [name[2:] for name in action.option_strings if name.startswith("--")]
        key = FORWARD_KEYS.get(action.dest) or long_names[0]
        keys[key] = action
    return keys


def is_list_option(action: argparse.Action) -> bool:
    """Options given once per value (``-L``, ``--listen``): a list in the file."""
    return isinstance(action.default, list)


def is_switch(action: argparse.Action) -> bool:
    return action.nargs == 0


def load(path: Path, parser: argparse.ArgumentParser, *, server: bool) -> ConfigFile:
    """Read ``path`` and convert each key with its option's own converter."""
    text = _read(path)
    _check_writers(path)
    document = _parse(path, text)
    keys = option_keys(parser)
    values: dict[str, Any] = {}
    clients: ClientsFile | None = None
    for key, raw in document.items():
        where = _where(path, text, key)
        if key == CLIENTS_TABLE and server:
            clients = _clients(path, text, raw)
            continue
        action = keys.get(key)
        if action is None:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggestion(key, keys)}")
        values[action.dest] = _convert(action, key, raw, where, path.parent)
    if values.get("verbose") and values.get("quiet"):
        raise ConfigError(f"{path}: verbose and quiet exclude each other")
    if clients is not None and values.get("clients_file") is not None:
        raise ConfigError(
            f"{_where(path, text, 'clients-file')}: give clients-file or [clients] tables, not both"
        )
    return ConfigFile(path, values, clients)


def _parse(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomltext.parse(text)
    except tomltext.TomlError as exc:
        raise ConfigError(f"{path}{exc.where}: {exc.what}") from None


def hosts_file() -> Path:
    """Where ``reactor-mux client NAME`` looks NAME up: ``$XDG_CONFIG_HOME/reactor-mux/
    hosts.toml`` (``~/.config`` without it), as ssh reads ``~/.ssh/config``."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    directory = Path(base) if Path(base).is_absolute() else Path.home() / ".config"
    return directory / "reactor-mux" / HOSTS_FILE


def load_host(path: Path, parser: argparse.ArgumentParser, name: str) -> dict[str, Any] | None:
    """The settings of host ``name`` from the hosts file at ``path`` (its table's keys
    are a client config file's), or None when the file or the table does not exist."""
    if not path.exists():
        return None
    text = _read(path)
    _check_writers(path)
    document = _parse(path, text)
    table = _host_table(document, name)
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{_where(path, text, name)}: {name} must be a table, [{name}]")
    keys = option_keys(parser)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if isinstance(raw, dict):  # [db] beside [db.example]: the other host's table
            continue
        where = _where(path, text, key, table=name)
        action = keys.get(key)
        if action is None:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggestion(key, keys)}")
        values[action.dest] = _convert(action, key, raw, where, path.parent)
    return values


def host_names(path: Path) -> list[str]:
    """The hosts the hosts file at ``path`` names (dotted for nested tables), for a
    "did you mean"; none when it is missing or does not parse (its own error comes
    when it is used)."""
    try:
        document = _parse(path, _read(path))
    except (ConfigError, OSError):
        return []
    names: list[str] = []

    def walk(table: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                names.append(prefix + key)
                walk(value, f"{prefix}{key}.")

    walk(document, "")
    return names


def _host_table(document: dict[str, Any], name: str) -> Any:
    """Host ``name``'s table: ``["db.example"]`` is a key of its own, ``[db.example]``
    TOML nests, as table ``example`` in table ``db``; either finds it."""
    if name in document:
        return document[name]
    table: Any = document
    for part in name.split("."):
        if not isinstance(table, dict) or part not in table:
            return None
        table = table[part]
    return table


def load_overrides(pairs: list[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``-o KEY=VALUE`` options: each as ``KEY = VALUE`` in a config file would be (a
    switch takes yes/no, a list option gathers the values given)."""
    keys = option_keys(parser)
    values: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        key = key.strip()
        where = f"-o {pair}"
        if not equals or not key:
            raise ConfigError(f"{where}: expected KEY=VALUE, a config file's key and a value")
        action = keys.get(key)
        if action is None:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggestion(key, keys)}")
        if is_switch(action):
            if text.lower() not in (*_TRUE, *_FALSE):
                raise ConfigError(f"{where}: {key} takes yes or no")
            values[action.dest] = text.lower() in _TRUE
        elif is_list_option(action):
            item = _convert_one(action, key, text, where, Path.cwd())
            values.setdefault(action.dest, []).append(item)
        else:
            values[action.dest] = _convert_one(action, key, text, where, Path.cwd())
    return values


def infer_role(path: Path) -> str:
    """``server`` or ``client``, from the keys only one role has."""
    document = _parse(path, _read(path))
    is_client = "server" in document
    is_server = "listen" in document or CLIENTS_TABLE in document
    if is_client == is_server:
        raise ConfigError(
            f"{path}: cannot tell whose file this is: a server's has listen, a client's server"
        )
    return "client" if is_client else "server"


def _check_writers(path: Path) -> None:
    """A config decides who may connect and where: refuse one that others may change."""
    mode = path.stat().st_mode  # _read has just read it
    if mode & 0o022:
        raise ConfigError(f"config file {path} may be changed by other users "
                          f"(mode {mode & 0o777:04o}): chmod go-w it")  # fmt: skip


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {describe_error(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None


def _suggestion(key: str, keys: dict[str, argparse.Action]) -> str:
    short = {"L": "local-forward", "R": "remote-forward", "D": "dynamic-forward"}
    flag = key.lstrip("-")
    if flag in short:
        return f" (-{flag} is {short[flag]!r} in a config file)"
    close = difflib.get_close_matches(key, keys, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(path: Path, text: str, key: str, table: str | None = None) -> str:
    line = line_of(text, key, table)
    return f"{path}:{line}" if line else str(path)


_HEADER = re.compile(r"\s*\[\s*([^\]]*?)\s*\]")


def line_of(text: str, key: str, table: str | None = None) -> int | None:
    """The line (from 1) where ``key`` is set, at the top level or in ``[table]``."""
    assignment = re.compile(rf"\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*=")
    lines = text.splitlines()
    for number, current in _headers(text, with_keys=True):
        if current == table and assignment.match(lines[number - 1]):
            return number
    return None


def _headers(text: str, *, with_keys: bool = False) -> Iterator[tuple[int, str | None]]:
    """Each ``[table]`` header line and its table name; ``with_keys`` also yields
    every other line with the table it lies in (None: the top level)."""
    current: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not line.lstrip().startswith("[["):
            current = header.group(1).replace('"', "").replace(" ", "")
            if not with_keys:
                yield number, current
        elif with_keys:
            yield number, current


def _convert(action: argparse.Action, key: str, raw: Any, where: str, base: Path) -> Any:
    if is_switch(action):
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: {key} must be true or false, not {_kind(raw)}")
        return raw
    if is_list_option(action):
        if not isinstance(raw, list):
            raise ConfigError(f'{where}: {key} must be a list, such as {key} = ["..."]')
        if not raw and key.startswith("allow-"):
            raise ConfigError(f"{where}: {key} = [] would mean no restriction at all "
                              "(as leaving it out does): list what is allowed")  # fmt: skip
        return [_convert_one(action, key, item, where, base) for item in raw]
    return _convert_one(action, key, raw, where, base)


def _convert_one(action: argparse.Action, key: str, raw: Any, where: str, base: Path) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ConfigError(f"{where}: {key} must be a string or a number, not {_kind(raw)}")
    text = str(raw)
    if action.type is Path:
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # ~name of a user that does not exist
            raise ConfigError(f"{where}: {key}: no home directory for {text!r}") from None
        return path if path.is_absolute() else base / path
    if action.type is None:
        value: Any = text
    else:
        convert: Any = action.type
        try:
            value = convert(text)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(str(choice) for choice in action.choices)
        raise ConfigError(f"{where}: {key} must be one of {choices}, not {text!r}")
    return value


def _kind(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true/false"
    if isinstance(raw, dict):
        return "a table"
    if isinstance(raw, list):
        return "a list"
    return type(raw).__name__


def _clients(path: Path, text: str, tables: Any) -> ClientsFile:
    where = _where(path, text, CLIENTS_TABLE)
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: clients must be [clients.NAME] tables")
    try:  # the tables hold secrets: the file must be as private as a clients file
        check_private(path, "config file with [clients] secrets")
        return clients_from_tables(path, tables, partial(_client_where, path, text))
    except CredentialsError as exc:
        raise ConfigError(str(exc)) from None


def _client_where(path: Path, text: str, name: str, key: str | None) -> str:
    """``path:LINE: client 'name'``: the key's line, else the table's header line."""
    table = f"{CLIENTS_TABLE}.{name}"
    line = line_of(text, key, table) if key is not None else None
    if line is None:
        line = next((number for number, current in _headers(text) if current == table), None)
    return f"{path}:{line}: client {name!r}" if line else f"{path}: client {name!r}"


# ---------------------------------------------------------------- printing


def render(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Iterator[str]:
    """The effective settings as a config file: every key, defaults included."""
    for key, action in option_keys(parser).items():
        value = getattr(args, action.dest, None)
        if value is None or value == []:
            yield f"# {key} is not set"
        else:
            yield f"{key} = {render_value(action, value)}"
    clients: ClientsFile | None = getattr(args, "config_clients", None)
    for name, entry in (clients.entries if clients is not None else {}).items():
        yield ""
        yield f"[{CLIENTS_TABLE}.{name}]"
        yield "# secret = (set; not shown)"
        for key, allow in (("allow-connect", entry.connect), ("allow-bind", entry.bind)):
            if allow is not None:
                yield f"{key} = {_array([pattern.text for pattern in allow.patterns])}"


def render_value(action: argparse.Action, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return _array([_scalar_text(action, item) for item in value])
    if isinstance(value, (int, float)) and getattr(action.type, "spell", None) is None:
        return f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(_scalar_text(action, value))


def _scalar_text(action: argparse.Action, value: Any) -> str:
    spell = getattr(action.type, "spell", None)
    if spell is not None:
        return str(spell(value))
    if isinstance(value, ForwardSpec | Pattern):
        return value.text
    if isinstance(value, tuple):
        return format_host_port(*value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _array(items: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"
