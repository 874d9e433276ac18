"""A private certificate authority for a lattice's NATS: a CA and server certificates.

`lattice up --secure` makes one so the secured lattice is encrypted as well as logged
into; the tests make throw-away ones the same way. Written with `cryptography` (what
Python's ssl module cannot do: issue certificates). Keys are ECDSA P-256, written with
mode 0600; certificates are PEM.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_USAGE = dict.fromkeys(
    ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False
) | {
    "digital_signature": True,
    "key_cert_sign": True,
    "crl_sign": True,
    "encipher_only": False,
    "decipher_only": False,
}


@dataclass(frozen=True)
class ServerTls:
    ca: Path  # what clients trust (--tls-ca)
    cert: Path
    key: Path

    def server_block(self) -> str:
        """The nats-server config block that requires TLS with this certificate."""
        return f'tls {{ cert_file: "{self.cert}", key_file: "{self.key}" }}\n'


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _names(sans: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(sans):  # in order, once each
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def make(directory: Path, sans: list[str], *, name: str = "lattice", days: int = 3650) -> ServerTls:
    """A CA and a server certificate for `sans` (host names and IP addresses) under
    `directory`: ca.pem, ca-key.pem, server.pem, server-key.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**CA_USAGE), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(_names(sans)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    made = ServerTls(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    made.ca.write_bytes(ca.public_bytes(pem))
    made.cert.write_bytes(cert.public_bytes(pem))
    _write_private(
        directory / "ca-key.pem", ca_key.private_bytes(pem, pkcs8, serialization.NoEncryption())
    )
    _write_private(made.key, key.private_bytes(pem, pkcs8, serialization.NoEncryption()))
    return made
