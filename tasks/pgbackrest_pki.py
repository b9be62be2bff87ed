"""The TLS identities of pgBackRest's endpoints, made and kept on the control machine.

pgBackRest's TLS servers authenticate their clients by certificate (the client's CN must be
authorised for the stanza, `tls-server-auth`), and its clients check the server's certificate
against the name they connect to. A small CA, private to one environment, signs them all; it
lives with the other secrets, untracked (`secrets/<group>-pgbackrest/`, mode 0700, files 0600),
and is made the first time a deploy needs it. Losing it costs nothing but a redeploy (new
certificates everywhere); the repository's passphrase is a separate secret.

pgBackRest 2.45 matches the name it connects to against the certificate's CN and DNS
subjectAltNames only, never an IP subjectAltName: a server reached by IP address carries that
address as a DNS name too (measured: with only `IP:` the client refuses the server).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Identity:
    """One certificate: `stem` names its files, `cn` is what servers authorise (clients) or
    what clients check (servers, with `address` as a subjectAltName)."""

    stem: str
    cn: str
    server_address: str | None = None

    @property
    def is_server(self) -> bool:
        return self.server_address is not None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(
        path.with_suffix(path.suffix + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
    )
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(path.with_suffix(path.suffix + ".tmp"), path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Pki:
    def __init__(self, directory: Path, environment: str) -> None:
        self.dir = directory
        self.environment = environment

    # the CA
    def _ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key_path, cert_path = self.dir / "ca.key", self.dir / "ca.crt"
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            if cert.not_valid_after_utc - _now() > RENEW_BEFORE:
                return key, cert
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"techno-os pgbackrest CA ({self.environment})"
                )
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
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
            )  # fmt: skip
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    def ca_cert(self) -> Path:
        self._ca()
        return self.dir / "ca.crt"

    # the leaves
    def paths(self, identity: Identity) -> tuple[Path, Path]:
        return self.dir / f"{identity.stem}.key", self.dir / f"{identity.stem}.crt"

    def _fits(self, identity: Identity, cert: x509.Certificate, ca: x509.Certificate) -> bool:
        if cert.issuer != ca.subject or cert.not_valid_after_utc - _now() < RENEW_BEFORE:
            return False
        try:
            ca.public_key().verify(  # type: ignore[call-arg, union-attr]
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256())
            )
        except Exception:  # signed by an earlier CA
            return False
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cn or cn[0].value != identity.cn:
            return False
        if identity.is_server:
            try:
                names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            except x509.ExtensionNotFound:
                return False
            return identity.server_address in names.value.get_values_for_type(x509.DNSName)
        return True

    def ensure(self, identity: Identity) -> tuple[Path, Path]:
        """The identity's key and certificate, (re)issued when missing, expiring, signed by
        another CA or naming another CN or address."""
        ca_key, ca = self._ca()
        key_path, cert_path = self.paths(identity)
        if key_path.exists() and cert_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if self._fits(identity, cert, ca):
                return key_path, cert_path
        key = ec.generate_private_key(ec.SECP256R1())
        usage = (
            ExtendedKeyUsageOID.SERVER_AUTH
            if identity.is_server
            else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.cn)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if identity.server_address is not None:
            names: list[x509.GeneralName] = [x509.DNSName(identity.server_address)]
            with contextlib.suppress(ValueError):
                names.append(x509.IPAddress(ipaddress.ip_address(identity.server_address)))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_private(key_path, _key_pem(key))
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return key_path, cert_path
