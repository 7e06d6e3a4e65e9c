"""Raw roster, presence and IQ helpers over the conftest ``Client`` (slixmpp), for the roster,
presence, subscription, vcard and registration scenarios. Errors come back as
``slixmpp.exceptions.IqError``; ``condition(exc)`` names the stanza error."""
from __future__ import annotations

import xml.etree.ElementTree as ET

ROSTER = "jabber:iq:roster"


def manual(xmpp_client, server, name: str, roster: bool = True, **options):
    """A logged-in client that leaves subscription requests to the test (slixmpp approves them
    by default): switched to manual before its initial presence, which it then sends."""
    client = xmpp_client(server, name, presence=False, roster=roster, **options)

    def off():
        client.xmpp.auto_authorize = None
        client.xmpp.auto_subscribe = False
        client.xmpp.send_presence()
    client.call(off)
    client.next("presence", match=lambda p: str(p["from"]) == client.jid)  # processed (§4.2.2)
    return client


def iq(client, payload: str, type: str = "get", to: str | None = None):
    """Send an IQ carrying the XML ``payload``; the result Iq (IqError on error)."""
    def send():
        stanza = client.xmpp.Iq(stype=type, sto=to)
        stanza.xml.append(ET.fromstring(payload))
        return stanza.send()
    return client.call(send)


def condition(exc) -> str:
    return exc.iq["error"]["condition"]


def roster_get(client, ver: str | None = None):
    """(items as {jid: item element}, ver) of a roster get, or None for an empty result (§2.6.3)."""
    result = iq(client, f"<query xmlns='{ROSTER}'" + (f" ver='{ver}'/>" if ver is not None else "/>"))
    query = result.xml.find(f"{{{ROSTER}}}query")
    if query is None:
        return None
    return {i.get("jid"): i for i in query.findall(f"{{{ROSTER}}}item")}, query.get("ver")


def roster_set(client, jid: str, name: str | None = None, groups=(), **attrs):
    item = ET.Element(f"{{{ROSTER}}}item", jid=jid, **({"name": name} if name else {}), **attrs)
    for group in groups:
        ET.SubElement(item, f"{{{ROSTER}}}group").text = group
    query = ET.Element(f"{{{ROSTER}}}query")
    query.append(item)
    return iq(client, ET.tostring(query, encoding="unicode"), "set")


def roster_remove(client, jid: str):
    return roster_set(client, jid, subscription="remove")


def groups(item: ET.Element) -> list[str]:
    return [g.text for g in item.findall(f"{{{ROSTER}}}group")]


def next_push(client, jid: str, subscription: str | None = None, timeout: float = 5):
    """The next roster push about ``jid`` (with that ``subscription``): its <item/> element."""
    def item(stanza):
        return next((i for i in stanza.xml.iter(f"{{{ROSTER}}}item") if i.get("jid") == jid), None)

    def about(stanza):
        found = stanza["type"] == "set" and item(stanza)
        return found is not None and found is not False and \
            subscription in (None, found.get("subscription"))
    return item(client.next("roster_update", timeout, about))


def send_presence(client, to: str | None = None, type: str | None = None, **fields):
    def send():
        stanza = client.xmpp.make_presence(pto=to, ptype=type)
        for key, value in fields.items():
            stanza[key] = value
        stanza.send()
    client.call(send)


def next_presence(client, sender: str, type: str | None = None, timeout: float = 5):
    """The next presence from ``sender`` (a bare JID matches every resource) of ``type``
    (None: available)."""
    def match(p):
        frm = p["from"]
        return (str(frm) == sender or frm.bare == sender) and p.xml.get("type") == type
    return client.next("presence", timeout, match)


def bare(client) -> str:
    return client.xmpp.boundjid.bare


def befriend(a, b) -> None:
    """Subscriptions both ways between the accounts of two ``manual`` clients (§3.1 twice);
    returns when both rosters say ``both``."""
    for x, y in ((a, b), (b, a)):
        send_presence(x, bare(y), "subscribe")
        next_presence(y, bare(x), "subscribe")
        send_presence(y, bare(x), "subscribed")
        next_presence(x, bare(y), "subscribed")
    next_push(a, bare(b), "both")
    next_push(b, bare(a), "both")


def available_from(client, *senders: str, timeout: float = 5) -> None:
    """Wait until available presence from each of ``senders`` arrived, in any order."""
    waiting = set(senders)

    def seen(p):
        waiting.discard(str(p["from"]))
        return not waiting
    client.next("presence", timeout, lambda p: p.xml.get("type") is None and seen(p))


def drain(client, event: str = "presence", wait: float = 0.3) -> list:
    """Every ``event`` that arrives until ``wait`` seconds pass without one."""
    items = []
    while True:
        try:
            items.append(client.next(event, wait))
        except AssertionError:
            return items
