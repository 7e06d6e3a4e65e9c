"""XMPP over WebSocket (RFC 7395) on the HTTP listener and XEP-0156 discovery, against a real
server: a hand-written wsproto client (``ws_client.py``) next to slixmpp over STARTTLS."""
import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET


from .test_slow_reader import (BODY, COUNT, MAX_QUEUED, the_rest_arrives_after_a_restart,
                               the_rest_was_stored)
from .ws_client import CLOSE, FRAMING_NS, OPEN, SASL_NS, STREAM_NS, WsClient



def http_get(server, path: str, **headers):
    request = urllib.request.Request(server.http_url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()



def bodies(elements) -> list[str]:
    """The bodies of the <message/>s among what a WebSocket client read."""
    return [m.findtext("{jabber:client}body") for m in elements if m.tag == "{jabber:client}message"]

def test_websocket_session_chats_with_xmpp_and_echo(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "wonderland", "bob": "builder"})
    url = f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"
    # XEP-0156 §3: both host-meta forms name the endpoint, readable from any origin.
    status, headers, body = http_get(server, "/.well-known/host-meta")
    assert status == 200 and headers["Content-Type"].startswith("application/xrd+xml")
    assert headers["Access-Control-Allow-Origin"] == "*"
    [link] = ET.fromstring(body).findall("{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")
    assert link.attrib == {"rel": "urn:xmpp:alt-connections:websocket", "href": url}
    status, headers, body = http_get(server, "/.well-known/host-meta.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"links": [{"rel": "urn:xmpp:alt-connections:websocket", "href": url}]}
    # No upgrade, or no 'xmpp' subprotocol: no WebSocket (RFC 7395 §3.1).
    status, headers, body = http_get(server, "/xmpp-websocket")
    assert (status, headers["Upgrade"]) == (426, "websocket") and b"RFC 7395" in body
    refused = WsClient(server, subprotocols=())
    assert refused.status == 400 and b"'xmpp' is required" in refused.body
    refused = WsClient(server, subprotocols=("chat",))
    assert refused.status == 400
    # A session: <open/> answered by <open/> and features without STARTTLS (loopback counts as
    # encrypted: websocket_secure_from), SASL, a second <open/>, binding.
    alice = WsClient(server)
    assert alice.status == 101 and alice.accepted.subprotocol == "xmpp"
    alice.send(OPEN)
    opened = alice.recv()
    assert opened.tag == f"{{{FRAMING_NS}}}open" and opened.get("from") == "example.org"
    assert opened.get("version") == "1.0" and opened.get("id")
    features = alice.recv()
    assert features.tag == f"{{{STREAM_NS}}}features"
    assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
    assert "PLAIN" in [m.text for m in features.iter(f"{{{SASL_NS}}}mechanism")]
    alice.close()
    alice = WsClient(server)
    jid = alice.login("alice", "wonderland", resource="browser")
    assert jid == "alice@example.org/browser"
    assert alice.ping(b"are you there")  # RFC 6455 §5.5.3: the pong carries the ping's data
    alice.send("<presence xmlns='jabber:client'/>")
    assert alice.next("}presence").get("from") == jid  # RFC 6121 §4.2.2: her own presence back
    bob = xmpp_client(server, "bob")
    # WebSocket → STARTTLS client, the sender stamped by the server (RFC 6120 §8.1.2.1).
    alice.send("<message xmlns='jabber:client' to='bob@example.org' from='mallory@example.org' "
               "type='chat'><body>hi from a browser</body></message>")
    message = bob.next("message")
    assert (message["body"], str(message["from"])) == ("hi from a browser", jid)
    # And back: each stanza one message, qualified by its namespace (RFC 7395 §3.3.3).
    bob.send_message(jid, "hi from slixmpp")
    received = alice.next("}message")
    assert received.tag == "{jabber:client}message" and received.get("from") == bob.jid
    assert received.findtext("{jabber:client}body") == "hi from slixmpp"
    # A stanza in several frames of one message is fine; echo answers.
    alice.send_fragments("<message xmlns='jabber:client' to='echo@example.org' type='chat'><bo",
                         "dy>echo me</body></mes", "sage>")
    echoed = alice.next("}message")
    assert (echoed.get("from"), echoed.findtext("{jabber:client}body")) == ("echo@example.org", "echo me")
    # An IQ: the server's answer comes back as one message.
    alice.send("<iq xmlns='jabber:client' type='get' id='p1' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    pong = alice.next("}iq")
    assert (pong.get("type"), pong.get("id")) == ("result", "p1")
    # <close/> (RFC 7395 §3.6): the server answers <close/>, then closes the WebSocket (1000);
    # bob sees alice go.
    alice.send(CLOSE)
    assert alice.next("}close").tag == f"{{{FRAMING_NS}}}close"
    alice.wait_closed()
    bob.next("presence", match=lambda p: str(p["from"]) == jid and p["type"] == "unavailable")
    # A server that stops ends a WebSocket session as a TCP one: system-shutdown, then <close/>.
    tab = WsClient(server)
    tab.login("alice", "wonderland", resource="tab")
    assert server.process.stop() == 0
    assert tab.stream_error() == "system-shutdown"


def test_bad_frames_get_stream_errors_and_the_server_keeps_serving(xmpp_server):
    """RFC 7395 §3.3.3: a message that is not exactly one element is a stream error; binary
    messages, stanzas before <open/> and oversized messages too; failed logins count as on TCP."""
    server = xmpp_server({"alice": "wonderland"}, max_stanza_size=4096, login_failures=2)
    cases = [
        (["<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>"], "bad-format"),
        (["<message xmlns='jabber:client'><body>half"], "bad-format"),
        ([""], "bad-format"),
        (["<message xmlns='jabber:client'><body>a</bod></message>"], "not-well-formed"),
        (["<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>"], "restricted-xml"),
        (["<message xmlns='jabber:client' to='alice@example.org'><body>" + "x" * 5000
          + "</body></message>"], "policy-violation"),
        ([OPEN], "bad-format"),  # a second <open/> in an open stream
    ]
    for messages, condition in cases:
        client = WsClient(server)
        for text in [OPEN, *messages]:
            client.send(text)
        assert client.stream_error() == condition, messages
        client.close()
    old = WsClient(server)
    old.send(OPEN.replace("'1.0'", "'0.9'"))
    assert old.stream_error() == "unsupported-version"
    before_open = WsClient(server)  # a stanza before <open/>: our <open/>, then the error
    before_open.send("<presence xmlns='jabber:client'/>")
    assert before_open.recv().tag == f"{{{FRAMING_NS}}}open"
    assert before_open.stream_error() == "bad-format"
    binary = WsClient(server)
    binary.send(OPEN)
    binary.send_bytes(b"<presence xmlns='jabber:client'/>")
    assert binary.stream_error() == "bad-format"
    huge = WsClient(server)  # counted as fragments arrive, not after the whole message
    huge.send(OPEN)
    huge.send_fragments("<message xmlns='jabber:client'><body>", "y" * 3000, "y" * 3000)
    assert huge.stream_error() == "policy-violation"
    # Two wrong passwords from this address (login_failures = 2): the next <auth/> is refused.
    for _ in range(2):
        guesser = WsClient(server)
        guesser.send(OPEN)
        guesser.next("}features")
        guesser.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>")
        failure = guesser.next("}failure")
        assert failure.find(f"{{{SASL_NS}}}not-authorized") is not None
        guesser.close()
    blocked = WsClient(server)
    blocked.send(OPEN)
    blocked.next("}features")
    blocked.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcmxhbmQ=</auth>")
    assert blocked.stream_error() == "policy-violation"


def test_plain_websocket_from_an_untrusted_address_cannot_log_in(xmpp_server):
    """With require_tls, a WebSocket that is not wss:// (the peer is not in websocket_secure_from)
    is offered no SASL mechanism and no STARTTLS; <starttls/> fails (RFC 6120 §5.4.2.2). XEP-0156
    advertises websocket_url when it is set."""
    public = "wss://chat.example.org/xmpp-websocket"
    server = xmpp_server({"alice": "wonderland"}, websocket_secure_from=[], websocket_url=public)
    _, _, body = http_get(server, "/.well-known/host-meta.json")  # the configured URL
    assert json.loads(body)["links"][0]["href"] == public
    client = WsClient(server)
    client.send(OPEN)
    features = client.next("}features")
    assert list(features) == []
    client.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcmxhbmQ=</auth>")
    failure = client.next("}failure")
    assert failure.find(f"{{{SASL_NS}}}encryption-required") is not None
    client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert client.next("}failure").tag == "{urn:ietf:params:xml:ns:xmpp-tls}failure"
    assert client.recv().tag == f"{{{FRAMING_NS}}}close"


def test_a_websocket_client_that_stops_reading_gets_every_message_once_in_order(xmpp_server,
                                                                                 xmpp_client):
    """``max_queued`` as on TCP (test_slow_reader.py): a browser that stops reading is disconnected
    and what its connection did not write is stored for the next login, in order, once."""
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"}, max_queued=MAX_QUEUED)
    slow = WsClient(server, small_buffers=True)
    slow.login("alice", "pw-a")
    slow.send("<presence xmlns='jabber:client'/>")
    slow.next("}presence")  # the server's echo; from now on she reads nothing
    bob = xmpp_client(server, "bob")
    for n in range(COUNT):
        bob.send_message(server.jid("alice"), BODY.format(n))
    bob.call(bob.xmpp.get_roster)  # answered after every message before it was routed
    the_rest_was_stored(server, xmpp_client, bodies(slow.read_to_the_end()))


def test_messages_queued_for_a_websocket_slow_reader_when_the_server_stops_are_stored(
        xmpp_server, xmpp_client):
    """As test_slow_reader.py's shutdown case: the server waits for its WebSocket sessions to give
    back what they did not write before the store closes."""
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"}, max_queued=1 << 20)
    slow = WsClient(server, small_buffers=True)
    slow.login("alice", "pw-a")
    slow.send("<presence xmlns='jabber:client'/>")
    slow.next("}presence")
    the_rest_arrives_after_a_restart(server, xmpp_client, lambda: bodies(slow.read_to_the_end()))
