"""When a peer cannot be used (issue 13): the senders of what waited for it get
``remote-server-not-found`` (nothing listens) or ``remote-server-timeout`` (it never answers),
a full per-domain queue is ``resource-constraint``, and SIGTERM ends the streams with
``system-shutdown`` while the peer goes on (it reconnects when there is something to send)."""
import socket

import pytest

from convergence.testing import free_port

from .talk import says

A, B = "a.example", "b.example"


@pytest.fixture
def silent_peer():
    """A listening socket that never accepts: connections complete (the kernel's backlog) and
    then hear nothing."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", free_port()))
    sock.listen(16)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def condition(error) -> str:
    return error["error"]["condition"]


def test_unreachable_and_silent_peers_and_a_full_queue(federated, silent_peer, xmpp_client):
    server = federated(A, {"alice": "alice-secret"},
                       {"closed.example": f"127.0.0.1:{free_port()}", "silent.example": silent_peer},
                       xmpp={"s2s_retry_window": 0.2, "s2s_max_queued": 2, "negotiation_timeout": 3.0})
    alice = xmpp_client(server, "alice")
    alice.send_message("bob@closed.example", "nobody listens")
    error = alice.next("message_error", timeout=10)
    assert (condition(error), str(error["from"])) == ("remote-server-not-found", "bob@closed.example")

    for n in range(3):
        alice.send_message("bob@silent.example", f"waiting {n}")
    full = alice.next("message_error", timeout=10)  # the third did not fit the queue
    assert condition(full) == "resource-constraint"
    late = [alice.next("message_error", timeout=15) for _ in range(2)]
    assert [condition(e) for e in late] == ["remote-server-timeout"] * 2


def test_sigterm_ends_streams_with_system_shutdown(federated, xmpp_client):
    pa, pb = free_port(), free_port()
    a = federated(A, {"alice": "alice-secret"}, {B: f"127.0.0.1:{pb}"},
                  xmpp={"s2s_listen": f"127.0.0.1:{pa}"})
    b = federated(B, {"bob": "bob-secret"}, {A: f"127.0.0.1:{pa}"},
                  xmpp={"s2s_listen": f"127.0.0.1:{pb}"})
    says(xmpp_client(a, "alice"), xmpp_client(b, "bob"), "before")
    mark = len(b.process.output)
    a.restart()  # SIGTERM, clean exit, start again on the same data
    b.process.wait_for("stream error from the peer: system-shutdown", start=mark)
    says(xmpp_client(b, "bob", resource="again"), xmpp_client(a, "alice", resource="again"), "after")
