"""``reactor-mux keygen``: a self-signed certificate and key for a server.

The key is ECDSA P-256 (small, fast to verify, accepted everywhere TLS 1.2
is), written with mode 0600 before a byte of it is; the certificate names
the hosts given with ``--name`` (DNS names or IP addresses) and is valid for
``--days``.  What the client needs is the certificate's SHA-256 fingerprint,
which keygen prints as a ready ``--tls-fingerprint`` argument: a self-signed
certificate needs no CA when the client pins it.  ``cryptography`` (the
field's library for this) is imported only here, so the tunnel itself does
not load it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from reactor_mux.io.tls import certificate_fingerprint, format_fingerprint

DEFAULT_DAYS = 825
"""The longest validity clients commonly accept for a server certificate."""


class KeygenError(Exception):
    """The files cannot be written (they exist, or the directory is not writable)."""


def _write_private(path: Path, data: bytes, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeygenError(f"{path} exists (give --force to replace it)") from None
    except OSError as exc:
        raise KeygenError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(data)


def generate(
    cert_path: Path, key_path: Path, names: Sequence[str], days: int = DEFAULT_DAYS,
    *, force: bool = False,
) -> str:  # fmt: skip
    """Write the key (0600) and certificate; return the certificate's fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if not force and cert_path.exists():
        raise KeygenError(f"{cert_path} exists (give --force to replace it)")
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = names[0] if names else "reactor-mux"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alternatives: list[x509.GeneralName] = []
    for name in names or ["localhost"]:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_path, pem_key, force)
    try:
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise KeygenError(f"cannot write {cert_path}: {exc.strerror}") from None
    der = certificate.public_bytes(serialization.Encoding.DER)
    return format_fingerprint(certificate_fingerprint(der))


def generate_secret(path: Path, *, force: bool = False) -> None:
    """A 32-byte random secret, hex-encoded, in a 0600 file."""
    import secrets

    _write_private(path, (secrets.token_hex(32) + "\n").encode(), force)
