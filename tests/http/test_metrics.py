"""GET /metrics during a scenario on a real server: the counters move by exactly what the clients
did (scraped and parsed with prometheus_client's own parser), the gauges show who is connected,
and the endpoint is loopback-only unless configured, or on a listener of its own (issue 17)."""
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from actors import ACCOUNTS, SIP, Phone
from api_client import call
from convergence.testing import free_port
from scenario_kit import LoginFailed
from sipp_runner import Sipp, needs_sipp


def scrape(url: str, headers: dict | None = None) -> dict:
    """{(sample name, frozenset of labels): value} of every sample /metrics shows."""
    request = urllib.request.Request(url + "/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as reply:
        text = reply.read().decode()
        parse = (openmetrics if reply.headers["Content-Type"].startswith("application/openmetrics")
                 else text_string_to_metric_families)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parse(text) for s in family.samples}


def moved(before: dict, after: dict, prefix: str) -> dict:
    """The samples named ``prefix…`` that changed, by (name, labels as a sorted tuple)."""
    return {(name, tuple(sorted(labels))): after[name, labels] - before.get((name, labels), 0)
            for name, labels in after
            if name.startswith(prefix) and after[name, labels] != before.get((name, labels), 0)}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0)


def routed(source, destination, outcome, condition=""):
    return ("convergence_messages_routed_total",
            (("condition", condition), ("destination", destination), ("outcome", outcome),
             ("source", source)))


def test_counters_move_by_what_xmpp_and_http_clients_did(convergence_server, xmpp_client):
    server = convergence_server(ACCOUNTS)
    url = server.http_url
    before = scrape(url)
    alice = xmpp_client(server, "convergence")
    with pytest.raises(LoginFailed):
        xmpp_client(server, "userc", password="wrong", mechanism="SCRAM-SHA-1")  # one attempt
    alice.send_message(server.jid("echo"), "ping")  # xmpp → echo, and echo's answer → xmpp
    assert alice.next("message")["body"] == "ping"
    alice.send_message(server.jid("userc"), "for later")  # offline: stored
    alice.send_message(server.jid("nobody"), "lost")  # no such account: refused
    alice.next("message_error")  # RFC 6121 §8.5.1: service-unavailable to the client
    reply = call(server, "POST", "/api/messages", {"to": server.jid("convergence"), "body": "hi"},
                 user="userc")
    assert reply.status == 200 and alice.next("message")["body"] == "hi"
    assert call(server, "GET", "/api/roster",
                headers={"Authorization": "Basic dXNlcmM6bm9wZQ=="}).status == 401  # userc:nope
    after = scrape(url)

    assert moved(before, after, "convergence_messages_routed") == {
        routed("xmpp", "service", "delivered"): 1,
        routed("service", "xmpp", "delivered"): 1,
        routed("xmpp", "store", "stored"): 1,
        routed("xmpp", "none", "refused", "item-not-found"): 1,
        routed("http", "xmpp", "delivered"): 1,
    }
    assert moved(before, after, "convergence_log") == {
        ("convergence_logins_total", (("protocol", "xmpp"),)): 1,
        ("convergence_login_failures_total", (("protocol", "xmpp"),)): 1,
        ("convergence_login_failures_total", (("protocol", "http"),)): 1,
    }
    total = [sum(n for (name, _), n in samples.items() if name == "convergence_messages_routed_total")
             for samples in (before, after)]
    assert total[1] - total[0] == 5
    timed = int(total[1]) // 16 - int(total[0]) // 16  # one message in 16 is timed
    assert value(after, "convergence_routing_seconds_count") - \
        value(before, "convergence_routing_seconds_count") == timed
    assert value(after, "convergence_endpoints", protocol="xmpp") == 1
    assert value(after, "convergence_xmpp_c2s_sessions") == 1
    assert value(after, "convergence_offline_messages") == 1
    assert value(after, "convergence_db_query_seconds_count") > value(before, "convergence_db_query_seconds_count")
    assert value(after, "process_resident_memory_bytes") > 0 and value(after, "process_open_fds") > 0

    alice.disconnect()
    server.process.wait_for("logout convergence@")
    gone = scrape(url)
    assert value(gone, "convergence_xmpp_c2s_sessions") == 0
    assert value(gone, "convergence_endpoints", protocol="xmpp") == 0


@needs_sipp
def test_sip_counters_move_by_what_the_phone_did(convergence_server, xmpp_client, tmp_path):
    server = convergence_server(ACCOUNTS, sip=SIP)
    folder = tmp_path / "sipp"
    folder.mkdir()
    phone = Phone(Sipp(server.sip_port, folder))
    alice = xmpp_client(server, "convergence")
    before = scrape(server.http_url)
    phone.register()  # REGISTER, 401, REGISTER with digest, 200
    incoming = phone.receive()
    alice.send_message(server.jid("sipuserf"), "are you there?")  # xmpp → sip: MESSAGE, 200
    incoming()
    phone.send("convergence", "yes")  # sip → xmpp: MESSAGE, 407, MESSAGE, 200
    assert alice.next("message")["body"].strip() == "yes"
    after = scrape(server.http_url)

    assert moved(before, after, "convergence_messages_routed") == {
        routed("xmpp", "sip", "delivered"): 1, routed("sip", "xmpp", "delivered"): 1}
    assert moved(before, after, "convergence_logins") == {
        ("convergence_logins_total", (("protocol", "sip"),)): 1}
    assert value(after, "convergence_sip_bindings") == 1
    assert value(after, "convergence_endpoints", protocol="sip") == 1
    sip = moved(before, after, "convergence_sip_")
    again = sip.pop(("convergence_sip_retransmissions_total", (("direction", "received"),)), 0)
    resent = sip.pop(("convergence_sip_retransmissions_total", (("direction", "sent"),)), 0)
    requests = {k[1][0][1]: n for k, n in sip.items() if k[0] == "convergence_sip_requests_received_total"}
    assert requests.get("REGISTER", 0) + requests.get("MESSAGE", 0) - again == 4 and set(requests) <= {
        "REGISTER", "MESSAGE"}
    answers = {k[1][0][1]: n for k, n in sip.items() if k[0] == "convergence_sip_responses_sent_total"}
    assert answers == {"4xx": 2, "2xx": 2}  # 401 and 407, the two 200s (a retransmission is
    # answered with the same response, not a new one)
    responses = {k[1][0][1]: n for k, n in sip.items() if k[0] == "convergence_sip_responses_received_total"}
    assert 1 <= responses["2xx"] <= 1 + resent  # the phone's 200 (once per MESSAGE it saw)


def test_metrics_are_for_loopback_unless_allowed_and_can_be_switched_off(convergence_server):
    server = convergence_server(ACCOUNTS, http={"metrics_allow": ["192.0.2.0/24"]})
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(server.http_url)
    assert refused.value.code == 403
    off = convergence_server(http={"metrics": False})  # the same database: no accounts again
    with pytest.raises(urllib.error.HTTPError) as missing:
        scrape(off.http_url)
    assert missing.value.code == 404
    assert urllib.request.urlopen(off.http_url + "/health/live", timeout=5).status == 200


def test_metrics_listen_serves_metrics_and_health_on_a_listener_of_its_own(convergence_server):
    port = free_port()
    server = convergence_server(ACCOUNTS, http={"metrics_listen": f"127.0.0.1:{port}"})
    own = f"http://127.0.0.1:{port}"
    assert value(scrape(own, {"Accept": "application/openmetrics-text; version=1.0.0"}),
                 "convergence_endpoints", protocol="xmpp") == 0
    with pytest.raises(urllib.error.HTTPError) as elsewhere:
        scrape(server.http_url)
    assert elsewhere.value.code == 404  # not on the main listener any more
    for base in (own, server.http_url):
        assert urllib.request.urlopen(base + "/health/ready", timeout=5).status == 200


def test_two_cores_in_one_process_count_apart_and_a_stream_overflow_is_counted(make_core):
    """In process: each core's registry reads its own objects (no global registry); an event
    stream whose client does not read is counted when its queue overflows."""
    from prometheus_client.exposition import generate_latest

    from convergence import Message
    from convergence.plugins.http.events import Stream

    def samples(core):
        text = generate_latest(core.metrics.registry).decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}
    one, two = make_core(), make_core()
    alice = one.add_account("alice", "pw")
    stream = Stream(one, one.pm.get_plugin("http:server").streams, alice, max_queued=1)
    body = stream.events(keepalive=5)
    assert next(body).startswith(b"event: stream\n")  # logged in
    assert value(samples(one), "convergence_http_event_streams") == 1
    sender = one.address("bob")
    assert [one.send(Message(sender, alice, m), "test") for m in ("m0", "overflow")] == ["delivered", "stored"]
    list(body)  # drained, then ended
    first, second = samples(one), samples(two)
    assert value(first, "convergence_http_event_stream_overflows_total") == 1
    assert value(first, "convergence_http_event_streams") == 0
    assert value(first, "convergence_logins_total", protocol="http") == 1
    assert value(first, "convergence_messages_routed_total", source="test", destination="http",
                 outcome="delivered", condition="") == 1
    assert value(first, "convergence_messages_routed_total", source="test", destination="store",
                 outcome="stored", condition="") == 1
    assert value(first, "convergence_offline_messages") == 1
    assert value(second, "convergence_http_event_stream_overflows_total") == 0
    assert value(second, "convergence_logins_total", protocol="http") == 0
    assert value(second, "convergence_offline_messages") == 0


def test_an_xmpp_client_that_stops_reading_is_counted_when_it_is_disconnected(
        convergence_server, raw_client, xmpp_client):
    server = convergence_server(ACCOUNTS, xmpp={"max_queued": 16384})
    reader = raw_client(server)
    reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up soon
    reader.login("convergence", ACCOUNTS["convergence"])
    reader.send(b"<presence/>")
    reader.next("presence")
    writer = xmpp_client(server, "userc")
    body = "x" * 8000
    for batch in range(100):  # until the server gives up on the reader
        for _ in range(20):
            writer.send_message(reader.bound, body)  # to the full JID: only that session
        if any("logout convergence@" in line for line in server.process.output):
            break
    server.process.wait_for("logout convergence@")
    samples = scrape(server.http_url)
    assert value(samples, "convergence_xmpp_slow_reader_disconnects_total") == 1
    assert value(samples, "convergence_xmpp_c2s_sessions") == 1  # the writer
