"""core.connection over real loopback sockets (gevent clients: the tests share the hub with the server)."""
import socket
import struct

import gevent
import gevent.socket
import gevent.ssl as gssl
import pytest
from gevent.event import Event
from gevent.server import StreamServer

from convergence import certificates
from convergence.connection import Connection


@pytest.fixture
def server():
    """A loopback server whose connections echo what they read; yields (address, connections)."""
    connections = []
    ready = Event()

    def handle(sock, peer):
        conn = Connection(sock, peer, max_queued=64 * 1024, idle_timeout=0.2)
        connections.append(conn)
        ready.set()
        conn.run(conn.send)

    srv = StreamServer(("127.0.0.1", 0), handle)
    srv.start()
    yield srv.address, connections, ready
    srv.stop(timeout=1)


def test_echoes_in_order_and_sets_nodelay(server):
    address, connections, ready = server
    with gevent.socket.create_connection(address) as client:
        client.settimeout(5)
        for i in range(100):
            client.sendall(b"%d," % i)
        want = b"".join(b"%d," % i for i in range(100))
        got = b""
        while len(got) < len(want):
            got += client.recv(65536)
        assert got == want
        ready.wait(5)
        assert connections[0].sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_peer_that_half_closes_after_its_request_still_gets_the_answer(server):
    """The answer to the last bytes before a FIN is queued in that same turn: it still goes out."""
    address, connections, ready = server
    with gevent.socket.create_connection(address) as client:
        client.settimeout(5)
        client.sendall(b"request")
        client.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := client.recv(65536):
            got += chunk
        assert got == b"request"  # then the server closed
    assert connections[0].close_reason == "closed by peer"


def test_idle_peer_is_closed_without_on_idle(server):
    address, connections, ready = server
    with gevent.socket.create_connection(address) as client:
        client.settimeout(5)
        assert client.recv(1) == b""  # closed by the server after 0.2 s of silence
    assert connections[0].close_reason == "idle timeout"


def test_peer_that_never_reads_is_disconnected_not_buffered():
    closed = Event()
    conns, accepted = [], []

    def handle(sock, peer):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        conn = Connection(sock, peer, max_queued=256 * 1024, write_timeout=30)
        conns.append(conn)
        chunk = b"x" * 16384
        while conn.send(chunk):
            accepted.append(len(chunk))
            gevent.sleep(0)  # let the loop fill the kernel buffers
        closed.set()

    srv = StreamServer(("127.0.0.1", 0), handle)
    srv.start()
    try:
        client = gevent.socket.create_connection(srv.address)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert closed.wait(10)
        assert conns[0].close_reason == "outbound queue full: the peer is not reading"
        # the queue's bound plus what the kernel buffers hold (small send and receive buffers)
        assert sum(accepted) <= 2 * 256 * 1024
        client.close()
    finally:
        srv.stop(timeout=1)


def test_flush_is_true_only_once_the_socket_took_everything():
    outcomes = []
    done = Event()

    def handle(sock, peer):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        conn = Connection(sock, peer, max_queued=4 << 20, write_timeout=30)
        conn.send(b"x" * (2 << 20))  # more than the kernel buffers hold: flush has to wait
        outcomes.append(conn.flush(10))  # the client reads it all
        conn.send(b"y" * (2 << 20))
        outcomes.append(conn.flush(10))  # the client goes away: the queue is thrown away
        done.set()

    srv = StreamServer(("127.0.0.1", 0), handle)
    srv.start()
    try:
        client = gevent.socket.create_connection(srv.address)
        client.settimeout(10)
        got = 0
        while got < 2 << 20:
            got += len(client.recv(65536))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset: the server's next write fails
        assert done.wait(10)
        assert outcomes == [True, False]
    finally:
        srv.stop(timeout=1)


def _live_greenlets() -> int:
    import gc

    import greenlet
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and o and not o.dead)


class KeepOpenServer(StreamServer):
    """A handler that returns after Connection.start() leaves the socket to its Connection."""

    def do_close(self, sock, *args):
        pass


def test_silent_connections_hold_no_greenlet():
    """The handler returns after start(); waiting for a silent peer is the event loop's job."""
    served = []

    def handle(sock, peer):
        conn = Connection(sock, peer)
        conn.start(conn.send)
        served.append(conn)

    srv = KeepOpenServer(("127.0.0.1", 0), handle)
    srv.start()
    clients = []
    try:
        gevent.sleep(0)
        before = _live_greenlets()
        clients = [gevent.socket.create_connection(srv.address) for _ in range(40)]
        with gevent.Timeout(5):
            while len(served) < 40:
                gevent.sleep(0.01)
        gevent.sleep(0)  # let the handler greenlets finish
        assert _live_greenlets() - before < 10
        clients[7].sendall(b"still served")  # and a silent connection still answers
        clients[7].settimeout(5)
        assert clients[7].recv(100) == b"still served"
    finally:
        for client in clients:
            client.close()
        srv.stop(timeout=1)


class CountingSocket:
    """A socket that counts its send() calls."""

    def __init__(self, sock):
        self._sock, self.sends = sock, 0

    def send(self, data):
        self.sends += 1
        return self._sock.send(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_sends_of_one_turn_leave_in_one_write_and_big_ones_in_order():
    conns = []

    def handle(sock, peer):
        conn = Connection(CountingSocket(sock), peer, max_queued=8 << 20)
        conns.append(conn)
        for i in range(50):
            conn.send(b"%d," % i)
        conn.send(bytes(range(256)) * 16384)  # 4 MiB: more than the socket takes at once
        conn.close_after_flush("done", timeout=30)

    srv = KeepOpenServer(("127.0.0.1", 0), handle)
    srv.start()
    try:
        with gevent.socket.create_connection(srv.address) as client:
            client.settimeout(10)
            got = bytearray()
            while chunk := client.recv(65536):
                got += chunk
        assert bytes(got) == b"".join(b"%d," % i for i in range(50)) + bytes(range(256)) * 16384
        assert conns[0].close_reason == "done"
        assert conns[0].sock.sends < 50  # the 51 sends were not 51 writes
    finally:
        srv.stop(timeout=1)


def test_on_idle_runs_after_each_silence_and_on_close_once():
    idles, closes = [], []
    done = Event()

    def handle(sock, peer):
        conn = Connection(sock, peer, idle_timeout=0.1)

        def on_idle():
            idles.append(1)
            conn.send(b"ping %d\n" % len(idles))
            if len(idles) == 3:
                conn.close_after_flush("enough")

        conn.start(conn.send, on_idle, lambda: (closes.append(conn.close_reason), done.set()))

    srv = KeepOpenServer(("127.0.0.1", 0), handle)
    srv.start()
    try:
        with gevent.socket.create_connection(srv.address) as client:
            client.settimeout(5)
            got = b""
            while chunk := client.recv(100):
                got += chunk
        assert got == b"ping 1\nping 2\nping 3\n"
        assert done.wait(5) and closes == ["enough"]
    finally:
        srv.stop(timeout=1)


def test_a_closed_tls_connection_counts_as_written_exactly_what_its_peer_can_read(tmp_path):
    """``written`` counts whole TLS records: the peer of a connection closed for a full queue
    reads exactly ``written`` bytes of what was sent (they were in the kernel; the close sends
    them, then FIN) and nothing more (a record cut short cannot be decrypted). Queued 40 KB at a
    time, a write covers several records, some of which the kernel takes before it is full."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    certificates.generate("example.org", cert, key)
    server_context = gssl.SSLContext(gssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    conns, sent, closed = [], [], Event()

    def handle(sock, peer):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        conn = Connection(sock, peer, max_queued=256 * 1024)
        conn.start_tls(server_context)
        conns.append(conn)
        while True:
            for _ in range(10):  # queued in one turn of the loop: one write
                sent.append(b"%07d;" % len(sent) + b"." * 4088)
                if not conn.send(sent[-1]):
                    closed.set()
                    return
            gevent.sleep(0)

    srv = StreamServer(("127.0.0.1", 0), handle)
    srv.start()
    try:
        raw = gevent.socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(srv.address)
        client_context = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
        client_context.load_verify_locations(cert)
        client = client_context.wrap_socket(raw, server_hostname="example.org")
        assert closed.wait(10)  # the client read nothing, so the queue overflowed
        client.settimeout(10)
        received = bytearray()
        while data := client.recv(65536):
            received += data
        assert conns[0].close_reason == "outbound queue full: the peer is not reading"
        assert 0 < len(received) == conns[0].written < conns[0].accepted
        assert received == b"".join(sent)[:len(received)]
        client.close()
    finally:
        srv.stop(timeout=1)
