"""Two complete servers in one process (issue 12): each core has its own SIP element, with its own
timer values, domain, bindings and account hooks; stopping one leaves the other as it was."""
import pytest

from convergence.plugins.sip.message import Headers, Request

DOMAIN = "example.com"  # tests/sip/conftest.py's


def message_to(phone):
    headers = Headers([("Max-Forwards", "70"), ("From", f"<sip:alice@{DOMAIN}>;tag=a1"),
                       ("To", f"<sip:bob@{DOMAIN}>"), ("Call-ID", f"{phone.port}@test"),
                       ("CSeq", "1 MESSAGE")])
    return Request("MESSAGE", f"sip:bob@127.0.0.1:{phone.port}", headers, b"hi")


def retransmission_timers(server, phone) -> tuple[float, float]:
    """Timer E and Timer F of a MESSAGE the server sends over UDP (§17.1.2.2: E = T1 after the
    start, F = 64*T1 after it), relative to the start."""
    element = server.element
    flow = element.transport.flow("UDP", "127.0.0.1", phone.port)
    start = element.transactions.now()
    ct = element.transactions.send_request(message_to(phone), flow, lambda response: None)
    return ct.txn.timers["E"] - start, ct.txn.timers["F"] - start


def test_two_servers_keep_their_own_timers_domain_and_bindings(sip_server):
    com = sip_server(t1=0.05, t2=0.4)
    net = sip_server(server={"domain": "example.net"}, t1=0.2, t2=1.6)
    assert com.element is not net.element
    for server in (com, net):
        server.core.add_account("alice", "secret")
    phone = com.client()

    assert retransmission_timers(com, phone) == pytest.approx((0.05, 64 * 0.05), abs=0.01)
    assert retransmission_timers(net, phone) == pytest.approx((0.2, 64 * 0.2), abs=0.01)

    assert phone.register("alice", "secret").status == 200  # alice@example.com, at com
    assert [ep.uri for ep in com.element.location.contacts("alice")] == [
        f"sip:alice@{phone.host}:{phone.port};transport=udp"]
    assert net.element.location.contacts("alice") == []
    assert not net.core.presence.presence(net.core.address("alice")).available
    stranger = net.client()
    assert stranger.ask(stranger.request("REGISTER")).status == 403  # example.com: not net's

    net.core.delete_account("alice")  # net's hook only: com's alice keeps her binding
    assert len(com.element.location.contacts("alice")) == 1
    assert com.core.presence.presence(com.core.address("alice")).available

    com.element.on_shutdown()  # stopping com resets nothing of net's
    assert com.core.pm.get_plugin("sip:server") is None
    assert retransmission_timers(net, phone) == pytest.approx((0.2, 64 * 0.2), abs=0.01)
