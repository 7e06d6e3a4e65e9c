"""External components (XEP-0114, plugins/xmpp/component.py): the sans-IO stream driven as
transcripts on recording links (header, handshake, addressing, replacement), then a real
slixmpp ``ComponentXMPP`` on the ``component_listen`` port talking with an XMPP client, the
HTTP API and a SIP phone through a running server."""
from __future__ import annotations

import hashlib
import types
import xml.etree.ElementTree as ET

import pytest

from convergence import RoutingError
from convergence.config import ConfigError
from convergence.plugins.xmpp import component
from convergence.plugins.xmpp.iq import IqRouter

from .test_c2s import names, stream_error
from .test_s2s_stream import Peer, TlsLink

DOMAIN, GATEWAY, SECRET = "example.org", "gateway.example.org", "s3cret"
ACCEPT = "{jabber:component:accept}"
SETTINGS = {"max_stanza_size": 65536, "negotiation_timeout": 30.0, "s2s_keepalive": 60.0,
            "component_max_streams": 10, "max_queued": 65536}


def components():
    service = types.SimpleNamespace(domain=DOMAIN, iq=IqRouter())
    table = component.components_setting({GATEWAY: SECRET, "bot.example.org": "other"})
    found = component.Components(service, SETTINGS, table)
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


def test_configuration_is_checked():
    with pytest.raises(ValueError):
        component.components_setting({GATEWAY: ""})
    with pytest.raises(ValueError):
        component.components_setting({"not a domain!": "x"})
    with pytest.raises(ConfigError, match="server's own domain"):
        component.check_domains({DOMAIN: "x"}, DOMAIN, "conference.example.org")
    with pytest.raises(ConfigError, match="muc_domain"):
        component.check_domains({"conference.example.org": "x"}, DOMAIN, "conference.example.org")
