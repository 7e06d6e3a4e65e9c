"""External components (XEP-0114, plugins/xmpp/component.py): the sans-IO stream driven as
transcripts on recording links (header, handshake, addressing, replacement), then a real
slixmpp ``ComponentXMPP`` on the ``component_listen`` port talking with an XMPP client, the
HTTP API and a SIP phone through a running server."""
from __future__ import annotations

import asyncio
import hashlib
import socket
import types
import urllib.request
import xml.etree.ElementTree as ET

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from scenario_kit import Client
from api_client import call
from sipp_runner import Sipp, needs_sipp

from convergence import RoutingError
from convergence.config import ConfigError
from convergence.plugins.xmpp import component
from convergence.plugins.xmpp.discovery import DISCO_ITEMS
from convergence.plugins.xmpp.iq import IqRouter
from convergence.plugins.xmpp.stream import Stanza, StreamClose, StreamParser
from convergence.testing import free_port

from .test_c2s import names, stream_error
from .roster_client import condition, iq
from .test_s2s_stream import Peer, TlsLink

DOMAIN, GATEWAY, SECRET = "example.org", "gateway.example.org", "s3cret"
ACCEPT = "{jabber:component:accept}"
SETTINGS = {"max_stanza_size": 65536, "negotiation_timeout": 30.0, "s2s_keepalive": 60.0,
            "component_max_streams": 10, "max_queued": 65536}


def components():
    service = types.SimpleNamespace(domain=DOMAIN, iq=IqRouter())
    table = component.components_setting({GATEWAY: SECRET, "bot.example.org": "other"})
    found = component.Components(service, SETTINGS, table)
    found.now = lambda: 1000.0  # a clock that stands still: timers are exact
    found.received = []
    found.on_stanza = found.received.append
    return found


def connect(table, to=GATEWAY, ns="jabber:component:accept"):
    stream = component.ComponentStream(table, TlsLink(), ("127.0.0.1", 4000))
    table.opened(stream)
    peer = Peer(stream)
    out = peer.say(f"<stream:stream xmlns='{ns}' xmlns:stream='http://etherx.jabber.org/streams' "
                   f"to='{to}'>".encode())
    return stream, peer, out


def authenticate(table, secret=SECRET):
    stream, peer, out = connect(table)
    digest = component.handshake(out[0].attrs["id"], secret)
    return stream, peer, peer.say(f"<handshake>{digest}</handshake>".encode())


def test_handshake_per_xep_0114():
    """§3: our header answers with the component's domain and a fresh id; the right digest
    (case-insensitive hex) gets an empty <handshake/> and the domain is connected; a wrong one
    is not-authorized; an unknown domain host-unknown; another namespace invalid-namespace."""
    assert component.handshake("3BF96D32", "secret") == hashlib.sha1(b"3BF96D32secret").hexdigest()
    table = components()
    stream, peer, out = connect(table)
    assert out[0].attrs["from"] == GATEWAY and len(out[0].attrs["id"]) == 32
    assert out[0].attrs["xmlns"] == "jabber:component:accept" and "version" not in out[0].attrs
    digest = component.handshake(out[0].attrs["id"], SECRET).upper()
    assert names(peer.say(f"<handshake> {digest} </handshake>".encode())) == [ACCEPT + "handshake"]
    assert table.connected == {GATEWAY: stream} and table.items() == [(GATEWAY, GATEWAY)]

    other, peer, out = authenticate(table, secret="wrong")
    assert stream_error(out) == "not-authorized" and other.closed and other not in table.streams
    _, peer, out = connect(table, to="nobody.example.org")
    assert stream_error(out) == "host-unknown"
    _, peer, out = connect(table, ns="jabber:client")
    assert stream_error(out) == "invalid-namespace"
    # a stanza before the handshake is refused
    _, peer, out = connect(table)
    assert stream_error(peer.say(b"<message to='a@example.org' from='gateway.example.org'/>")) == "not-authorized"
    # the ids differ per stream (the digest binds one)
    ids = {connect(table)[2][0].attrs["id"] for _ in range(5)}
    assert len(ids) == 5


def test_stanzas_addresses_and_replacement():
    """After the handshake stanzas go to ``on_stanza`` in jabber:client names; a foreign 'from' is
    invalid-from, a missing 'to' improper-addressing; a second stream for the domain replaces
    the first with conflict; a domain not connected is service-unavailable."""
    table = components()
    with pytest.raises(RoutingError) as refused:
        table.send(GATEWAY, ET.Element("{jabber:client}message", to=GATEWAY))
    assert refused.value.condition == "service-unavailable"
    stream, peer, _ = authenticate(table)
    assert peer.say(b"<message from='gateway.example.org' to='a@example.org'><body>hi</body></message>"
                    b"<iq type='get' id='1' from='x@gateway.example.org/r' to='example.org'>"
                    b"<ping xmlns='urn:xmpp:ping'/></iq>") == []
    assert names(table.received) == ["{jabber:client}message", "{jabber:client}iq"]
    assert table.received[0].findtext("{jabber:client}body") == "hi"

    # out: a renamed copy; the plugin's element keeps its names
    element = ET.Element("{jabber:client}message", {"to": GATEWAY, "from": "a@example.org/r"})
    ET.SubElement(element, "{jabber:client}body").text = "to you"
    table.send(GATEWAY, element)
    [got] = peer.say()
    assert got.tag == ACCEPT + "message" and got.findtext(ACCEPT + "body") == "to you"
    assert element.tag == "{jabber:client}message"

    newer, newer_peer, out = authenticate(table)
    assert names(out) == [ACCEPT + "handshake"]
    assert stream_error(peer.say()) == "conflict" and stream.closed
    assert table.connected == {GATEWAY: newer}
    assert stream_error(newer_peer.say(b"<message from='a@example.org' to='b@example.org'/>")) == "invalid-from"
    assert table.connected == {}
    later, later_peer, _ = authenticate(table)
    assert stream_error(later_peer.say(b"<message from='gateway.example.org'/>")) == "improper-addressing"
    later, later_peer, _ = authenticate(table)
    assert stream_error(later_peer.say(b"<foo xmlns='jabber:component:accept' "
                                       b"from='gateway.example.org'/>")) == "unsupported-stanza-type"
    # keep-alives, not idle closes, once authenticated
    later, later_peer, _ = authenticate(table)
    assert later.idle_timeout() == 60.0
    later.idle()
    assert later.link.out == b" " and not later.closed


def test_limits():
    """A handshake not sent within negotiation_timeout is connection-timeout; beyond
    component_max_streams open streams a connection is closed at once."""
    from convergence.plugins.xmpp import component_transport
    table = components()
    stream, peer, _ = connect(table)
    assert stream.idle_timeout() == 30.0
    stream.idle()
    assert stream_error(peer.say()) == "connection-timeout" and stream not in table.streams
    for _ in range(SETTINGS["component_max_streams"]):
        connect(table)
    closed, ended = [], []
    sock = types.SimpleNamespace(close=lambda: closed.append(True))
    component_transport.serve(table, sock, ("127.0.0.1", 4001), lambda: ended.append(True))
    assert closed == ended == [True] and len(table.streams) == SETTINGS["component_max_streams"]


def test_configuration_is_checked():
    with pytest.raises(ValueError):
        component.components_setting({GATEWAY: ""})
    with pytest.raises(ValueError):
        component.components_setting({"not a domain!": "x"})
    with pytest.raises(ConfigError, match="server's own domain"):
        component.check_domains({DOMAIN: "x"}, DOMAIN, "conference.example.org")
    with pytest.raises(ConfigError, match="muc_domain"):
        component.check_domains({"conference.example.org": "x"}, DOMAIN, "conference.example.org")


# ---- a real component (slixmpp ComponentXMPP) on a running server ---------------------------

ACCOUNTS = {"alice": "pw-a", "bob": "pw-b"}
ECHO = f"echo@{GATEWAY}"


def server_with_components(convergence_server, accounts=ACCOUNTS, **sections):
    port = free_port()
    server = convergence_server(accounts, xmpp={"component_listen": f"127.0.0.1:{port}",
                                                "components": {GATEWAY: SECRET}}, **sections)
    server.component_port = port
    return server


def gateway(client_loop, server, secret: str = SECRET, expect_ok: bool = True) -> Client:
    """A slixmpp component connected to ``server`` (its handshake answered: ``session_start``),
    or for ``expect_ok=False`` one whose handshake was refused (the stream error is queued)."""
    async def start():
        xmpp = slixmpp.ComponentXMPP(GATEWAY, secret, "127.0.0.1", server.component_port)
        xmpp.register_plugin("xep_0030")
        xmpp.register_plugin("xep_0199")
        client = Client(client_loop, xmpp)
        done = client_loop.loop.create_future()
        xmpp.add_event_handler("session_start", lambda _: done.done() or done.set_result(True))
        xmpp.add_event_handler("stream_error", lambda e: done.done() or done.set_result(False))
        xmpp.connect()
        assert await asyncio.wait_for(done, 10) is expect_ok
        return client
    return client_loop.run(start, timeout=12)


def disconnect(gw: Client, server) -> None:
    """Close the component's stream and wait until the server has seen it end (its log says so)."""
    start = len(server.process.output)
    gw.disconnect()
    server.process.wait_for(f"({GATEWAY}) ended", start=start)


def server_items(client) -> set[str]:
    result = iq(client, f"<query xmlns='{DISCO_ITEMS}'/>", to=DOMAIN)
    return {item.get("jid") for item in result.xml.iter(f"{{{DISCO_ITEMS}}}item")}


def raw_component(server):
    """A hand-written component: (socket, parser, the server's header)."""
    sock = socket.create_connection(("127.0.0.1", server.component_port), timeout=5)
    parser = StreamParser(10 ** 6)
    sock.sendall(f"<stream:stream xmlns='jabber:component:accept' "
                 f"xmlns:stream='http://etherx.jabber.org/streams' to='{GATEWAY}'>".encode())
    return sock, parser, read(sock, parser)[0]


def read(sock, parser, until=lambda events: events) -> list:
    events = []
    while not until(events):
        data = sock.recv(65536)
        assert data, f"connection closed after {events}"
        events += [e.element if isinstance(e, Stanza) else e for e in parser.feed(data)]
    return events


def test_component_talks_with_clients_and_the_http_api(convergence_server, xmpp_client, client_loop):
    """XEP-0114 end to end: a wrong secret is refused (not-authorized, logged); the component
    then connects, is listed in the server's disco#items and metrics, exchanges messages, IQs and
    directed presence with an XMPP client, gets ``POST /api/messages``, asks the server itself
    (disco#info); a second connection replaces it (conflict); once it is gone messages bounce and IQs fail (service-unavailable);
    a stanza with a foreign 'from' ends a stream with invalid-from."""
    server = server_with_components(convergence_server)
    refused = gateway(client_loop, server, secret="wrong", expect_ok=False)
    assert refused.next("disconnected")
    assert "WARNING" in server.process.wait_for(f"wrong handshake for {GATEWAY} from 127.0.0.1")
    alice = xmpp_client(server, "alice")
    assert GATEWAY not in server_items(alice)

    gw = gateway(client_loop, server)
    assert GATEWAY in server_items(alice)
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=5) as reply:
        metrics = reply.read().decode().splitlines()
    assert "convergence_xmpp_components_connected 1.0" in metrics
    assert "convergence_xmpp_component_streams 1.0" in metrics
    alice.send_message(ECHO, "ping the gateway")
    got = gw.next("message", match=lambda m: m["body"] == "ping the gateway")
    assert got["from"].full == alice.jid and got["to"].full == ECHO
    gw.send_message(alice.jid, "pong from the gateway", **{"from": ECHO})
    answer = alice.next("message", match=lambda m: m["body"] == "pong from the gateway")
    assert answer["from"].full == ECHO
    # the component to the bare JID: every resource, like any message (RFC 6121 §8.5.2)
    gw.send_message(server.jid("alice"), "to your account", **{"from": f"news@{GATEWAY}"})
    alice.next("message", match=lambda m: m["body"] == "to your account")
    # IQs both ways: alice pings the component (slixmpp answers), it asks the server and alice
    assert iq(alice, "<ping xmlns='urn:xmpp:ping'/>", to=GATEWAY)["type"] == "result"
    info = gw.call(lambda: gw.xmpp.plugin["xep_0030"].get_info(jid=DOMAIN, ifrom=GATEWAY))
    answered = gw.call(lambda: gw.xmpp.plugin["xep_0030"].get_info(jid=alice.jid, ifrom=ECHO))
    assert answered["type"] == "result"  # alice's client answered; the result went back to ECHO
    assert info["type"] == "result" and "server" in {i[0] for i in info["disco_info"]["identities"]}

    # directed presence both ways
    alice.call(lambda: alice.xmpp.send_presence(pto=GATEWAY, pstatus="hi gateway"))
    assert gw.next("presence", match=lambda p: p["status"] == "hi gateway")["from"].full == alice.jid
    gw.call(lambda: gw.xmpp.send_presence(pto=alice.jid, pfrom=ECHO, pstatus="up"))
    assert alice.next("presence", match=lambda p: p["status"] == "up")["from"].full == ECHO

    # a subscription to the component's domain (RFC 6121 §3.1 with a remote contact): the
    # component approves, its presence to alice's bare JID is shown (§4.2.3), alice's next
    # session probes it (§4.3.1)
    gw.watch("presence_subscribe")
    gw.watch("presence_probe")
    alice.call(lambda: alice.xmpp.send_presence(pto=GATEWAY, ptype="subscribe"))
    assert gw.next("presence_subscribe")["from"].bare == server.jid("alice")
    gw.call(lambda: gw.xmpp.send_presence(pto=server.jid("alice"), pfrom=GATEWAY, ptype="subscribed"))
    alice.next("presence", match=lambda p: p["from"].full == GATEWAY and p["type"] == "subscribed")
    gw.call(lambda: gw.xmpp.send_presence(pto=server.jid("alice"), pfrom=GATEWAY, pstatus="online"))
    alice.next("presence", match=lambda p: p["from"].full == GATEWAY and p["status"] == "online")
    xmpp_client(server, "alice", resource="second")
    assert gw.next("presence_probe")["from"].bare == server.jid("alice")

    # the HTTP API (bob) reaches the component
    reply = call(server, "POST", "/api/messages", {"to": ECHO, "body": "from the web"}, user="bob")
    assert reply.status == 200 and reply.json["outcome"] == "delivered"
    web = gw.next("message", match=lambda m: m["body"] == "from the web")
    assert web["from"].bare == server.jid("bob")

    # a second connection for the domain replaces the first (conflict, as Prosody does)
    newer = gateway(client_loop, server)
    assert gw.next("stream_error")["condition"] == "conflict"
    alice.send_message(ECHO, "to the newer one")
    newer.next("message", match=lambda m: m["body"] == "to the newer one")
    disconnect(newer, server)

    # gone: a message bounces, an IQ fails, disco#items forgets it
    alice.send_message(ECHO, "anyone there?")
    bounce = alice.next("message_error", match=lambda m: m["from"].full == ECHO)
    assert bounce["error"]["condition"] == "service-unavailable"
    with pytest.raises(IqError) as failed:
        iq(alice, "<ping xmlns='urn:xmpp:ping'/>", to=GATEWAY)
    assert condition(failed.value) == "service-unavailable"
    assert GATEWAY not in server_items(alice)

    # a hand-written component: handshake, then a stanza from another domain
    sock, parser, header = raw_component(server)
    sock.sendall(f"<handshake>{component.handshake(header.attrs['id'], SECRET)}</handshake>".encode())
    assert read(sock, parser, lambda e: e)[0].tag == ACCEPT + "handshake"
    sock.sendall(f"<message from='alice@{DOMAIN}' to='bob@{DOMAIN}'><body>forged</body></message>".encode())
    events = read(sock, parser, lambda e: any(isinstance(x, StreamClose) for x in e))
    assert stream_error(events) == "invalid-from"
    sock.close()
    alice.none("message", wait=0.2)


@needs_sipp
def test_sip_phone_and_component_message_each_other(convergence_server, client_loop, tmp_path):
    """A phone's MESSAGE to sip:echo@gateway.example.org reaches the component (200 OK); the
    component's message to the phone's user arrives as a SIP MESSAGE from its JID; with the
    component gone the phone's MESSAGE is refused (503, service-unavailable)."""
    from actors import PHONE_PASSWORD, SIP, Phone
    server = server_with_components(convergence_server, {**ACCOUNTS, "sipuserf": PHONE_PASSWORD},
                                    sip=SIP)
    gw = gateway(client_loop, server)
    folder = tmp_path / "sipp"
    folder.mkdir()
    phone = Phone(Sipp(server.sip_port, folder))
    phone.register()
    phone.send("echo", "hello gateway", domain=GATEWAY)
    got = gw.next("message", match=lambda m: m["body"].strip() == "hello gateway")
    assert got["from"].bare == server.jid("sipuserf")
    incoming = phone.receive()
    gw.send_message(server.jid("sipuserf"), "hello phone", **{"from": ECHO})
    log = incoming()
    assert f"From: <sip:{ECHO}>" in log and "hello phone" in log
    disconnect(gw, server)
    log = phone.send("echo", "still there?", domain=GATEWAY, expect=503)
    assert "503" in log
