"""Certificates for the development stack and the tests: a private CA and the
certificates it signs (PIXL's HTTPS front, DICOM TLS, the FTPS server).

A hospital deployment brings its own certificate and key (secret store or files,
see `tls_material`); these are for the native stack, the demo and the tests.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orthanc_plugins.common.secrets import SecretStore, find_secret
from orthanc_plugins.common.settings import Settings
from pixl_stack.processes import StackError

LOCAL_HOSTNAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Issuer:
    """A CA's certificate and key, to sign other certificates."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, certfile: Path, keyfile: Path) -> Issuer:
        key = serialization.load_pem_private_key(Path(keyfile).read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey), f"{keyfile}: not an EC key"
        return cls(x509.load_pem_x509_certificate(Path(certfile).read_bytes()), key)


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path`, readable by its owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def make_certificate(
    certfile: Path, keyfile: Path, hostnames: tuple[str, ...] = LOCAL_HOSTNAMES,
    days: int = 365, issuer: Issuer | None = None, ca: bool = False,
) -> tuple[Path, Path]:
    """Write a certificate valid for `hostnames` (names or IP addresses) and its
    private key (mode 0600), signed by `issuer`, or self-signed when it is None.
    `ca`: a CA certificate (may sign others). Returns (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    alternative_names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            alternative_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alternative_names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        # A self-signed certificate is its own CA (clients trust it as one).
        .add_extension(x509.BasicConstraints(ca=ca or issuer is None, path_length=None), critical=True)
    )
    if issuer is not None and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    certificate = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    certfile, keyfile = Path(certfile), Path(keyfile)
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    write_private_file(keyfile, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ))
    return certfile, keyfile


def make_self_signed_cert(
    certfile: Path, keyfile: Path, hostnames: tuple[str, ...] = LOCAL_HOSTNAMES, days: int = 365,
) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) and its key."""
    return make_certificate(certfile, keyfile, hostnames, days)


def certificate_hostnames(certfile: Path) -> set[str]:
    """The names and IP addresses a certificate is valid for."""
    certificate = x509.load_pem_x509_certificate(Path(certfile).read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in names}


@dataclass(frozen=True)
class DevelopmentPki:
    """A private CA in `folder` and the server certificate it signs, made once."""

    folder: Path

    @property
    def ca_certificate(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca-key.pem"

    @property
    def server_certificate(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server-key.pem"

    def ensure(self, hostnames: tuple[str, ...] = LOCAL_HOSTNAMES) -> DevelopmentPki:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # raw's and anon's containers may start together on one shared volume: one CA.
        with open(self.folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.ca_certificate.exists() and self.ca_key.exists()):
                make_certificate(self.ca_certificate, self.ca_key, ("PIXL development CA",), 3650, ca=True)
                self.server_certificate.unlink(missing_ok=True)
            if not (self.server_certificate.exists() and self.server_key.exists()
                    and set(hostnames) <= certificate_hostnames(self.server_certificate)):
                self.issue(self.server_certificate, self.server_key, hostnames)
        return self

    def issue(self, certfile: Path, keyfile: Path, hostnames: tuple[str, ...]) -> tuple[Path, Path]:
        """Another certificate signed by this CA (a DICOM TLS client, a test server)."""
        return make_certificate(certfile, keyfile, hostnames,
                                issuer=Issuer.load(self.ca_certificate, self.ca_key))


TLS_CERTIFICATE_SECRET = "pixl-tls-certificate"
TLS_KEY_SECRET = "pixl-tls-key"


def tls_material(settings: Settings, store: SecretStore) -> tuple[Path, Path]:
    """(certificate, key) files of the HTTPS front: from the secret store when it
    holds both (written to the configured paths, mode 0600), else the configured
    files; when neither exists and the files are the default ones, a development
    CA and a server certificate signed by it are made (the native stack, tests)."""
    certfile, keyfile = settings.tls_certificate_file, settings.tls_key_file
    if certfile is None or keyfile is None:
        raise StackError("TLS is on but PIXL_TLS_CERTIFICATE_FILE / PIXL_TLS_KEY_FILE are 'none'")
    certificate, key = find_secret(store, TLS_CERTIFICATE_SECRET), find_secret(store, TLS_KEY_SECRET)
    if certificate and key:
        certfile.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        certfile.write_text(certificate)
        write_private_file(keyfile, key.encode())
        return certfile, keyfile
    pki = DevelopmentPki(certfile.parent)
    development = ((certfile, keyfile) == (pki.server_certificate, pki.server_key)
                   and settings.tls_ca_bundle == pki.ca_certificate)
    # PIXL's own CA (its key beside it), or nothing yet: never a CA or certificate the
    # operator put at the default paths.
    if development and (pki.ca_key.exists() or not (certfile.exists() or pki.ca_certificate.exists())):
        # Valid for the names the servers call each other by (compose: orthanc-raw,
        # orthanc-anon, the other containers) and those in PIXL_TLS_HOSTNAMES; made
        # again when a name is missing.
        pki.ensure(tuple(dict.fromkeys(
            (*LOCAL_HOSTNAMES, settings.raw.host, settings.anon.host, *settings.tls_hostnames))))
        return certfile, keyfile
    if certfile.exists() and keyfile.exists():
        return certfile, keyfile
    raise StackError(
        f"TLS certificate {certfile} or key {keyfile} not found, and no secrets "
        f"{TLS_CERTIFICATE_SECRET} / {TLS_KEY_SECRET} in the secret store"
    )
