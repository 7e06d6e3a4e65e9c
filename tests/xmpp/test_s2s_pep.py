"""Capabilities of remote entities for PEP over federation (plugins/xmpp/s2s_pep.py), with no
server: XEP-0115 §6.3 over s2s (the disco#info query goes to the federation, the answer through
the IQ router's awaited answers), the cache bound, and who gets told (XEP-0163 §4.3)."""
import xml.etree.ElementTree as ET

from convergence import Address
from convergence.plugins.xmpp import caps, s2s_pep
from convergence.plugins.xmpp.iq import IqRouter

DISCO = "{http://jabber.org/protocol/disco#info}"
TUNE = "http://jabber.org/protocol/tune"


class Federation:
    def __init__(self):
        self.sent = []

    def send(self, domain, element, bounce=None):
        self.sent.append((domain, element))


class Service:
    domain = "a.example"

    def __init__(self, cache_size=2):
        self.caps = caps.Caps(cache_size)
        self.federation = Federation()
        self.iq = IqRouter()


def presence(ver: str, type: str | None = None) -> ET.Element:
    element = ET.Element("{jabber:client}presence", {"type": type} if type else {})
    ET.SubElement(element, f"{{{caps.NS}}}c", hash="sha-1", node="https://client.example", ver=ver)
    return element


def answer(iq: ET.Element, features: list[str]) -> ET.Element:
    reply = ET.Element("{jabber:client}iq", {"type": "result", "id": iq.get("id"), "from": iq.get("to"),
                                             "to": iq.get("from")})
    query = ET.SubElement(reply, DISCO + "query", node=iq[0].get("node"))
    ET.SubElement(query, DISCO + "identity", category="client", type="pc")
    for name in features:
        ET.SubElement(query, DISCO + "feature", var=name)
    return reply


def test_remote_capabilities_are_asked_over_federation_verified_cached_and_bounded():
    service, told = Service(), []
    bob = Address.from_jid("bob@b.example/phone")
    features = ["http://jabber.org/protocol/disco#info", TUNE + "+notify"]
    ver = caps.verification_hash(answer(caps.query(service, bob.jid, "x", "")[1], features)[0], "sha-1")
    s2s_pep.learn(service, bob, presence(ver), told.append)
    [(domain, iq)] = service.federation.sent
    assert domain == "b.example" and iq.get("to") == bob.jid and iq[0].get("node") == f"https://client.example#{ver}"
    assert s2s_pep.notify_set(service, bob) == frozenset() and told == []  # not known yet
    service.iq.dispatch(service, object(), answer(iq, features))  # the answer, as s2s_routing passes it
    assert s2s_pep.notify_set(service, bob) == {TUNE} and told == [bob]
    assert service.caps.cached(("sha-1", ver)) is not None  # it verified

    # another entity with the same ver: known at once, no query; the cache keeps two entities
    carol, dave = Address.from_jid("carol@b.example/x"), Address.from_jid("dave@c.example/y")
    for someone in (carol, dave):
        s2s_pep.learn(service, someone, presence(ver), told.append)
    assert len(service.federation.sent) == 1 and told == [bob, carol, dave]
    assert list(service.caps.remote) == [carol, dave]  # bob, the least recently seen, forgotten
    assert s2s_pep.known(service, Address.from_jid("carol@b.example")) == [carol]

    s2s_pep.learn(service, carol, presence(ver, "unavailable"), told.append)
    assert s2s_pep.known(service, Address.from_jid("carol@b.example")) == []
    s2s_pep.learn(service, dave, presence("v" * 300), told.append)  # a ver too long: forgotten
    assert not service.caps.remote


def test_an_answer_for_capabilities_announced_since_is_ignored():
    service, told = Service(), []
    bob = Address.from_jid("bob@b.example/phone")
    s2s_pep.learn(service, bob, presence("first"), told.append)
    [(_, first)] = service.federation.sent
    s2s_pep.learn(service, bob, presence("second"), told.append)
    service.iq.dispatch(service, object(), answer(first, [TUNE + "+notify"]))
    assert s2s_pep.notify_set(service, bob) == frozenset() and told == []
