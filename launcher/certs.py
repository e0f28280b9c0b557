"""Development certificates for TLS: ``python -m launcher.certs [DIR] [--force]`` (what ``make certs`` runs).

Writes the layout ``TRADING_TLS_DIR`` expects: ``ca.crt`` and, per service, ``<service>.crt`` and
``<service>.key``. Each service certificate has the service's name as its common name (the identity the
other services check on internal calls) and names for every way it is reached: ``localhost``,
``127.0.0.1``, ``::1`` and its docker compose name (``order-service``...). Keys are ECDSA P-256 in
unencrypted PKCS#8 (what gRPC reads), written owner-only (0600). The CA's private key is never
written: once the set exists nobody can issue another certificate from it, and ``--force`` makes a
new CA with a new set.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.config import REPO_ROOT

SERVICES = ("order_service", "user_service", "exchange_gateway")
"""The services that get a certificate; each file is named after the service (``order_service.crt``)."""

COMPOSE_NAMES = {
    "order_service": "order-service",
    "user_service": "user-service",
    "exchange_gateway": "exchange-gateway",
}
"""Each service's host name in docker-compose.yml."""

LOCAL_NAMES = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1", "::1")
DEFAULT_DIR = REPO_ROOT / "var" / "tls"
CA_NAME = "trading-core development CA"
VALID_DAYS = 825


@dataclass(frozen=True)
class Issued:
    """A private key and the certificate that goes with it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        """The certificate in PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key in unencrypted PKCS#8 PEM (gRPC reads no passphrase)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_ca(common_name: str = CA_NAME, *, days: int = VALID_DAYS) -> Issued:
    """A self-signed CA that may sign service certificates (and no intermediate CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue(
    ca: Issued,
    common_name: str,
    *,
    dns_names: Sequence[str] = LOCAL_NAMES,
    addresses: Sequence[str] = LOCAL_ADDRESSES,
    days: int = VALID_DAYS,
) -> Issued:
    """A certificate signed by ``ca`` for server and client use, named ``common_name``, valid for the given names."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (created 0600 before anything is written)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def write_pair(directory: Path, name: str, issued: Issued) -> None:
    """Write ``<name>.crt`` (0644) and ``<name>.key`` (0600) into ``directory``."""
    write_private(directory / f"{name}.key", issued.key_pem())
    cert_path = directory / f"{name}.crt"
    cert_path.write_bytes(issued.cert_pem())
    os.chmod(cert_path, 0o644)


def expected_files(directory: Path) -> list[Path]:
    """Every file of a complete set in ``directory``."""
    return [directory / "ca.crt"] + [directory / f"{s}.{ext}" for s in SERVICES for ext in ("crt", "key")]


def make_dev_certs(directory: Path, *, force: bool = False, extra_names: Sequence[str] = ()) -> bool:
    """Create a development CA and the three service certificates in ``directory``.

    Returns False (and changes nothing) when a complete set is already there, unless ``force``.
    ``extra_names`` are further DNS names every certificate is valid for.
    """
    if not force and all(path.exists() for path in expected_files(directory)):
        return False
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca = new_ca()
    for service in SERVICES:
        names = [*LOCAL_NAMES, COMPOSE_NAMES[service], *extra_names]
        write_pair(directory, service, issue(ca, service, dns_names=names))
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.cert_pem())
    os.chmod(ca_path, 0o644)
    return True


def main(argv: list[str] | None = None) -> int:
    """Create the development set; print where it is and how to use it."""
    parser = argparse.ArgumentParser(prog="python -m launcher.certs", description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR, help="where to write [var/tls]")
    parser.add_argument("--force", action="store_true", help="replace an existing set with a new CA")
    parser.add_argument("--name", action="append", default=[], help="a further DNS name for every certificate")
    args = parser.parse_args(argv)
    directory: Path = args.directory
    if make_dev_certs(directory, force=args.force, extra_names=args.name):
        print(f"Wrote a development CA and certificates for {', '.join(SERVICES)} to {directory}")
    else:
        print(f"{directory} already holds a complete set (make certs FORCE=1, or --force, replaces it)")
    relative = os.path.relpath(directory.resolve())
    shown = str(directory.resolve()) if relative.startswith("..") else relative
    print(f"Run over TLS:  TRADING_TLS_DIR={shown} make run")
    print(f"Clients need the CA only:  grpcurl -cacert {shown}/ca.crt 127.0.0.1:50051 list")
    return 0


if __name__ == "__main__":
    sys.exit(main())
