"""The c2s transport on real sockets: Direct TLS, shutdown, and sessions ending with the TCP link."""
import socket
import ssl

import pytest


@pytest.fixture
def server(xmpp_server):
    return xmpp_server({"alice": "wonderland", "carol": "c"}, tls_listen=True)


def test_shutdown_sends_system_shutdown_to_every_stream(server, raw_client):
    bound, negotiating = raw_client(server), raw_client(server)
    bound.login("alice", "wonderland")
    negotiating.open()
    assert server.process.stop() == 0
    assert bound.stream_error() == "system-shutdown"
    assert negotiating.stream_error() == "system-shutdown"


def test_plain_text_on_the_direct_tls_port_is_dropped_and_others_go_on(server, raw_client, xmpp_client):
    carol = xmpp_client(server, "carol", password="c", direct_tls=True)
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=5) as plain:
        plain.sendall(b"<?xml version='1.0'?><stream:stream to='example.org'>")
        answer = b""
        try:
            while chunk := plain.recv(1024):  # a TLS alert at most, then the close
                answer += chunk
        except ConnectionResetError:
            pass
        assert b"stream" not in answer
    carol.send_message("echo@example.org", "fine")
    assert carol.next("message")["body"] == "fine"


def test_direct_tls_speaks_tls_from_the_first_byte(server, raw_client):
    context = ssl.create_default_context(cafile=str(server.cert))
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname="example.org") as tls:
            tls.sendall(b"<?xml version='1.0'?><stream:stream to='example.org' version='1.0' "
                        b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
            data = b""
            while b"</stream:features>" not in data:
                data += tls.recv(4096)
    assert b"<mechanism>PLAIN</mechanism>" in data and b"starttls" not in data


def test_abrupt_tcp_loss_logs_the_session_out(xmpp_server, raw_client):
    """With resource_conflict = "rename", the resource would be renamed while the old session lived."""
    server = xmpp_server({"alice": "wonderland"}, resource_conflict="rename")
    raw = raw_client(server)
    raw.login("alice", "wonderland", resource="same")
    raw.sock.close()
    again = raw_client(server)
    again.login("alice", "wonderland", resource="same")
    assert again.bound == "alice@example.org/same"
