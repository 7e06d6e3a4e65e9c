"""The server's TLS certificate, shared by every TLS listener (XMPP STARTTLS and Direct TLS, SIP TLS).

Configured ``tls_cert``/``tls_key`` files are used as given. Without them a self-signed certificate
for the domain is generated into ``<data_dir>/tls/`` on first start and reused afterwards. Its
subjectAltName carries the domain as a dNSName and as an XmppAddr (RFC 6120 §13.7.1.4), so XMPP
peers that check either accept it once trusted.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

#: id-on-xmppAddr, RFC 6120 §13.7.1.4
XMPP_ADDR = ObjectIdentifier("1.3.6.1.5.5.7.8.5")
VALID_DAYS = 825


class CertificateError(Exception):
    """The configured certificate or key cannot be used; the message says which file and why."""


def _der_utf8(text: str) -> bytes:
    data = text.encode()
    return bytes([0x0C, len(data)]) + data if len(data) < 128 else bytes([0x0C, 0x81, len(data)]) + data


def generate(domain: str, cert_path: Path, key_path: Path) -> None:
    """Write a self-signed ECDSA P-256 certificate for ``domain`` (key file mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    try:
        alt = [x509.IPAddress(ipaddress.ip_address(domain.strip("[]")))]
    except ValueError:
        alt = [x509.DNSName(domain), x509.OtherName(XMPP_ADDR, _der_utf8(domain))]
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def files(domain: str, data_dir: Path, cert: str = "", key: str = "") -> tuple[Path, Path]:
    """The (certificate, key) files to use: the configured ones, else generated once and reused."""
    if cert or key:
        if not (cert and key):
            raise CertificateError("tls_cert and tls_key must be set together")
        return Path(cert), Path(key)
    cert_path, key_path = data_dir / "tls" / f"{domain}.crt", data_dir / "tls" / f"{domain}.key"
    if not (cert_path.exists() and key_path.exists()):
        generate(domain, cert_path, key_path)
    return cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context without renegotiation, or CertificateError naming the file that is
    wrong. OpenSSL's SSL_MODE_RELEASE_BUFFERS (set by CPython on every context) frees an idle
    connection's record buffers; TLS 1.3 session tickets stay on (resumption for reconnecting
    clients; they cost ~0.04 ms of a full handshake's ~0.27 ms server CPU)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # No TLS 1.2 renegotiation (RFC 7457 §2.2 attacks; TLS 1.3 has none): a connection's reads and
    # writes then never wait on each other's direction (convergence.connection is non-blocking).
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"cannot use certificate {cert_path} with key {key_path}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
    return context
