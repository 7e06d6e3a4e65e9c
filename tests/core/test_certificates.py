"""The shared TLS certificate: generated once for the domain, reused, usable by a real handshake."""
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509

from convergence.certificates import XMPP_ADDR, CertificateError, files, server_context


def test_generated_once_and_reused(tmp_path):
    cert, key = files("example.org", tmp_path)
    first = cert.read_bytes()
    assert files("example.org", tmp_path) == (cert, key) and cert.read_bytes() == first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    san = x509.load_pem_x509_certificate(first).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.org"]
    (other,) = san.get_values_for_type(x509.OtherName)
    assert other.type_id == XMPP_ADDR and other.value == b"\x0c\x0bexample.org"


def test_tls_handshake_with_the_generated_certificate(tmp_path):
    cert, key = files("localhost", tmp_path)
    context = server_context(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(5))
    thread = threading.Thread(target=serve)
    thread.start()
    client = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"hello")
        assert tls.recv(5) == b"hello"
        assert ("DNS", "localhost") in tls.getpeercert()["subjectAltName"]
    thread.join(10)
    listener.close()


def test_configured_files_must_exist_and_come_in_pairs(tmp_path):
    with pytest.raises(CertificateError, match="together"):
        files("example.org", tmp_path, cert=str(tmp_path / "a.crt"))
    cert, key = files("example.org", tmp_path, str(tmp_path / "no.crt"), str(tmp_path / "no.key"))
    with pytest.raises(CertificateError, match="no.crt"):
        server_context(cert, key)


def test_server_context_refuses_renegotiation(tmp_path):
    """Connection reads and writes never block, so TLS must not want to write while reading."""
    cert, key = files("localhost", tmp_path)
    assert server_context(cert, key).options & ssl.OP_NO_RENEGOTIATION
