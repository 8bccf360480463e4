"""The command line's security options: TLS, authentication, allow-lists.

Kept apart from the parser, which knows the roles and the channel's limits:
this module adds one argument group per role and turns the parsed options into
what the roles take (a ``SessionConfig``'s credentials or secret book, a TLS
context, a ``Policy``).  Every problem, from contradictory flags to a secret
file other users can read, is a ``SecurityOptionError`` with one line of
explanation, which the command line prints as a usage error.

Safe by default: a server that listens beyond loopback must authenticate its
clients (a secret, a clients file, or client certificates) unless told
``--insecure``, and a reload may not turn authentication off while such a
listener is bound.  Private keys are held to the rule of secret files.  The
admission options (``--max-startups`` and the per-source limits, penalties and
exemptions) become an ``AdmissionConfig``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reactor_mux.io.tls import ClientTls, ServerTls, TlsConfigError, parse_fingerprint
from reactor_mux.protocol.auth import SHARED_NAME, Credentials, SecretBook, SharedSecret
from reactor_mux.protocol.syntax import format_host_port, is_loopback
from reactor_mux.security.admission import (
    DEFAULT_PER_SOURCE_MAX_STARTUPS,
    AdmissionConfig,
    MaxStartups,
    MaxStartupsError,
)
from reactor_mux.security.credentials import (
    ClientsFile,
    CredentialsError,
    check_private,
    load_clients_file,
    secret_from,
)
from reactor_mux.security.penalties import PenaltySpec, PenaltySpecError, parse_networks
from reactor_mux.security.policy import (
    AllowList,
    PathPattern,
    Pattern,
    PatternError,
    Policy,
    parse_pattern,
)
from reactor_mux.security.sourceblock import Netblock, NetblockError


class SecurityOptionError(ValueError):
    """Security options that cannot be used together, or files that cannot be used."""


def _pattern(text: str) -> Pattern | PathPattern:
    try:
        return parse_pattern(text)
    except PatternError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fingerprint(text: str) -> str:
    try:
        return parse_fingerprint(text)
    except TlsConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parsed:
    """An argparse converter from a ``parse`` classmethod and its error class;
    ``spell`` writes a value back the way check-config prints it."""

    def __init__(self, parse: Any, error: type[ValueError]) -> None:
        self._parse, self._error = parse, error
        self.spell = lambda value: value.spell()

    def __call__(self, text: str) -> Any:
        try:
            return self._parse(text)
        except self._error as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


def network_list(text: str) -> str:
    """A CIDR option's value (checked; parsed where it is used)."""
    try:
        parse_networks([text])
    except PenaltySpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _per_source(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1 << 20:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count in 1..1048576")
    return int(text)


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
        "a network or *; PORTS a port, a range or *; udp/HOST:PORTS for UDP forwards (a list "
        "of TCP patterns allows no UDP); or /PATH (with *) for Unix sockets, which are "
        "refused unless named (repeatable)")  # fmt: skip
    add("--allow-bind", action="append", default=[], type=_pattern, metavar="PATTERN",
        help="-R addresses clients may listen on, in the same form (repeatable)")  # fmt: skip
    add("--insecure", action="store_true",
        help="listen beyond loopback without authenticating clients")  # fmt: skip
    admission = parser.add_argument_group("admission of unauthenticated connections "
                                          "(docs/security.md, denial of service)")  # fmt: skip
    add = admission.add_argument
    add("--max-startups", type=_Parsed(MaxStartups.parse, MaxStartupsError),
        default=MaxStartups(), metavar="START:RATE:FULL",
        help="above START unauthenticated connections, refuse new ones from sources that "
        "already have one with probability RATE%%, rising to 100%% at FULL (ssh's "
        "MaxStartups; default 10:30:100)")  # fmt: skip
    add("--per-source-max-startups", type=_per_source,
        default=DEFAULT_PER_SOURCE_MAX_STARTUPS, metavar="N",
        help="unauthenticated connections from one source block at once "
        f"(default {DEFAULT_PER_SOURCE_MAX_STARTUPS})")  # fmt: skip
    add(
        "--per-source-netblock",
        type=_Parsed(Netblock.parse, NetblockError),
        default=Netblock(),
        metavar="V4:V6",
        help="prefix lengths that group addresses into a source block (default 32:64; a "
        "single number sets IPv4 and keeps IPv6 at 64)",
    )
    add("--per-source-penalties", type=_Parsed(PenaltySpec.parse, PenaltySpecError),
        default=PenaltySpec(), metavar="SPEC",
        help="how long a source block that failed before authenticating is turned away: "
        "'off', or words over the defaults, which are 'authfail:5 noauth:1 "
        "grace-exceeded:10 protocol:20 tls:5 min:15 max:600 max-sources:65536' (ssh's "
        "PerSourcePenalties; durations in seconds, or with s, m, h, d or w)")  # fmt: skip
    add("--penalty-exempt", action="append", default=[], type=network_list, metavar="CIDR",
        help="never penalise, or turn away for a penalty, sources in this network "
        "(repeatable, or comma-separated)")  # fmt: skip


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
    admission: AdmissionConfig


@dataclass(frozen=True)
class ClientSecurity:
    credentials: Credentials | None
    tls: ClientTls | None


@dataclass(frozen=True)
class RunningServer:
    """What a reload cannot change in a running server, and the safe default looks at:
    where it listens, and whether its TLS asks clients for certificates."""

    addresses: list[tuple[str, int]]
    client_certificates: bool


def server_security(
    args: argparse.Namespace, running: RunningServer | None = None
) -> ServerSecurity:
    """Check the server's security options and load what they name.  ``running``: for
    a reload, the server as it runs (its listeners and TLS stay what they were), which
    the safe-default check looks at instead of the file's ``listen`` and TLS."""
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
        if args.tls_key is not None:
            check_private(args.tls_key, "--tls-key")
        tls = (ServerTls.from_files(args.tls_cert, args.tls_key, args.tls_client_ca)
               if args.tls_cert is not None else None)  # fmt: skip
    except (CredentialsError, TlsConfigError) as exc:
        raise SecurityOptionError(str(exc)) from None
    book: SecretBook | None = (
        clients if clients is not None else (SharedSecret(secret) if secret is not None else None)
    )
    certificates = (args.tls_client_ca is not None if running is None
                    else running.client_certificates)  # fmt: skip
    authenticates = book is not None or certificates
    if not authenticates and not args.insecure:
        for host, port in args.listen if running is None else running.addresses:
            if not is_loopback(host):
                what = "listen on" if running is None else "stop authenticating clients while"
                where = format_host_port(host, port)
                raise SecurityOptionError(
                    f"refusing to {what} {where}{' is bound' if running is not None else ''} "
                    "without authenticating clients: give --secret-file (or "
                    "REACTOR_MUX_SECRET), --clients-file or --tls-client-ca, or --insecure "
                    "to let anyone who can connect use this host"
                )
    policy = Policy(
        connect=AllowList(args.allow_connect, "--allow-connect"),
        bind=AllowList(args.allow_bind, "--allow-bind"),
    )
    admission = AdmissionConfig(
        max_startups=args.max_startups,
        per_source_max_startups=args.per_source_max_startups,
        netblock=args.per_source_netblock,
        penalties=args.per_source_penalties,
        exempt=parse_networks(args.penalty_exempt),
    )
    return ServerSecurity(book, clients, tls, policy, admission)


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
        if args.tls_key is not None:
            check_private(args.tls_key, "--tls-key")
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
