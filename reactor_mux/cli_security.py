"""The command line's security options: TLS, authentication, allow-lists.

Kept apart from cli.py, which knows the roles and the channel's limits: this
module adds one argument group per role and turns the parsed options into
what the roles take (a ``SessionConfig``'s credentials or secret book, a TLS
context, a ``Policy``).  Every problem, from contradictory flags to a secret
file other users can read, is a ``SecurityOptionError`` with one line of
explanation, which cli.py prints as a usage error.

Safe by default: a server that listens beyond loopback must authenticate its
clients (a secret, a clients file, or client certificates) unless told
``--insecure``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from reactor_mux.credentials import (
    ClientsFile,
    CredentialsError,
    load_clients_file,
    secret_from,
)
from reactor_mux.policy import AllowList, Pattern, PatternError, Policy, parse_pattern
from reactor_mux.protocol.auth import SHARED_NAME, Credentials, SecretBook, SharedSecret
from reactor_mux.protocol.syntax import format_host_port, is_loopback
from reactor_mux.tls import ClientTls, ServerTls, TlsConfigError, parse_fingerprint


class SecurityOptionError(ValueError):
    """Security options that cannot be used together, or files that cannot be used."""


def _pattern(text: str) -> Pattern:
    try:
        return parse_pattern(text)
    except PatternError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fingerprint(text: str) -> str:
    try:
        return parse_fingerprint(text)
    except TlsConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_server_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security (docs/security.md)")
    add = group.add_argument
    add("--tls-cert", type=Path, metavar="PATH", help="serve TLS with this certificate (PEM)")
    add("--tls-key", type=Path, metavar="PATH", help="the certificate's private key (PEM)")
    add("--tls-client-ca", type=Path, metavar="PATH",
        help="require client certificates signed by this CA (mutual TLS)")  # fmt: skip
    add("--secret-file", type=Path, metavar="PATH",
        help="require clients to prove they know this shared secret "
        "(or set REACTOR_MUX_SECRET)")  # fmt: skip
    add("--clients-file", type=Path, metavar="PATH",
        help="TOML: each client's name, secret and own allow-lists")  # fmt: skip
    add("--allow-connect", action="append", default=[], type=_pattern, metavar="PATTERN",
        help="-L targets clients may reach: HOST:PORTS, HOST a name (with *), an address, "
        "a network or *; PORTS a port, a range or * (repeatable)")  # fmt: skip
    add("--allow-bind", action="append", default=[], type=_pattern, metavar="PATTERN",
        help="-R addresses clients may listen on, in the same form (repeatable)")  # fmt: skip
    add("--insecure", action="store_true",
        help="listen beyond loopback without authenticating clients")  # fmt: skip


def add_client_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security (docs/security.md)")
    add = group.add_argument
    add("--tls", action="store_true", help="speak TLS to the server, and verify it")
    add("--tls-ca", type=Path, metavar="PATH",
        help="verify the server against this CA, not the system's")  # fmt: skip
    add("--tls-server-name", metavar="NAME",
        help="the name the server's certificate must carry (default: --server's host)")  # fmt: skip
    add("--tls-fingerprint", type=_fingerprint, metavar="SHA256",
        help="accept exactly the server certificate with this SHA-256 fingerprint "
        "(hex, colons optional; keygen prints it)")  # fmt: skip
    add("--tls-cert", type=Path, metavar="PATH", help="this client's certificate (mutual TLS)")
    add("--tls-key", type=Path, metavar="PATH", help="this client's certificate's key")
    add("--tls-insecure", action="store_true",
        help="do not verify the server at all (warns on every connect)")  # fmt: skip
    add("--secret-file", type=Path, metavar="PATH",
        help="authenticate with this secret (or set REACTOR_MUX_SECRET)")  # fmt: skip
    add("--name", metavar="NAME", help="the client name the server's clients file knows")


@dataclass(frozen=True)
class ServerSecurity:
    secret_book: SecretBook | None
    clients: ClientsFile | None
    tls: ServerTls | None
    policy: Policy


@dataclass(frozen=True)
class ClientSecurity:
    credentials: Credentials | None
    tls: ClientTls | None


def server_security(args: argparse.Namespace) -> ServerSecurity:
    """Check the server's security options and load what they name."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SecurityOptionError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise SecurityOptionError("--tls-client-ca needs --tls-cert and --tls-key")
    clients: ClientsFile | None = getattr(args, "config_clients", None)
    if args.secret_file is not None and (args.clients_file is not None or clients is not None):
        raise SecurityOptionError("give --secret-file or --clients-file (or [clients]), not both")
    if clients is not None and args.clients_file is not None:
        raise SecurityOptionError("give --clients-file or [clients] in --config, not both")
    try:
        if args.clients_file is not None:
            clients = load_clients_file(args.clients_file)
        secret = None if clients is not None else secret_from(args.secret_file)
        tls = (ServerTls.from_files(args.tls_cert, args.tls_key, args.tls_client_ca)
               if args.tls_cert is not None else None)  # fmt: skip
    except (CredentialsError, TlsConfigError) as exc:
        raise SecurityOptionError(str(exc)) from None
    book: SecretBook | None = (
        clients if clients is not None else (SharedSecret(secret) if secret is not None else None)
    )
    authenticates = book is not None or args.tls_client_ca is not None
    if not authenticates and not args.insecure:
        for host, port in args.listen:
            if not is_loopback(host):
                raise SecurityOptionError(
                    f"refusing to listen on {format_host_port(host, port)} without "
                    "authenticating clients: give --secret-file (or REACTOR_MUX_SECRET), "
                    "--clients-file or --tls-client-ca, or --insecure to let anyone who can "
                    "connect use this host"
                )
    policy = Policy(
        connect=AllowList(args.allow_connect, "--allow-connect"),
        bind=AllowList(args.allow_bind, "--allow-bind"),
    )
    return ServerSecurity(book, clients, tls, policy)


def client_security(args: argparse.Namespace) -> ClientSecurity:
    """Check the client's security options and load what they name."""
    tls_only = ("tls_ca", "tls_server_name", "tls_fingerprint", "tls_cert", "tls_key")
    if not args.tls:
        given = [name for name in tls_only if getattr(args, name) is not None]
        if given or args.tls_insecure:
            flag = "--" + (given[0] if given else "tls_insecure").replace("_", "-")
            raise SecurityOptionError(f"{flag} needs --tls")
    ways = [args.tls_ca is not None, args.tls_fingerprint is not None, args.tls_insecure]
    if sum(ways) > 1:
        raise SecurityOptionError(
            "--tls-ca, --tls-fingerprint and --tls-insecure exclude each other"
        )
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SecurityOptionError("--tls-cert and --tls-key go together")
    try:
        secret = secret_from(args.secret_file)
        tls = None
        if args.tls:
            tls = ClientTls.from_options(
                ca=args.tls_ca, server_name=args.tls_server_name,
                fingerprint=args.tls_fingerprint, cert=args.tls_cert, key=args.tls_key,
                insecure=args.tls_insecure,
            )  # fmt: skip
        credentials = None
        if secret is not None:
            credentials = Credentials(secret, args.name or SHARED_NAME)
        elif args.name is not None:
            raise SecurityOptionError("--name needs a secret (--secret-file or REACTOR_MUX_SECRET)")
    except (CredentialsError, TlsConfigError) as exc:
        raise SecurityOptionError(str(exc)) from None
    except ValueError as exc:  # a name Credentials refuses
        raise SecurityOptionError(str(exc)) from None
    return ClientSecurity(credentials, tls)
