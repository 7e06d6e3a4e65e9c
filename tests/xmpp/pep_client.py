"""slixmpp clients for the PEP scenarios (XEP-0163): stock plugins xep_0060/0115/0163, interests
announced through entity capabilities (XEP-0115) before the initial presence."""
from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = PUBSUB + "#event"
ERRORS = PUBSUB + "#errors"
PLUGINS = ("xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0084", "xep_0049", "xep_0048",
           "xep_0172", "xep_0402")
EVENTS = ("pubsub_publish", "pubsub_retract", "pubsub_delete", "pubsub_purge")


def pep_client(xmpp_client, server, name: str, notify=(), resource: str = "test"):
    """A logged-in client whose caps carry ``<ns>+notify`` for each of ``notify``, available."""
    client = xmpp_client(server, name, presence=False, resource=resource)
    client.caps_queries = []  # the server's disco#info queries for our caps node (XEP-0115 §6.3)

    def seen(stanza):
        query = stanza.xml.find("{http://jabber.org/protocol/disco#info}query")
        if stanza.name == "iq" and stanza["type"] == "get" and stanza["from"] == server.domain \
                and query is not None and query.get("node"):
            client.caps_queries.append(query.get("node"))
        return stanza

    async def setup():
        xmpp = client.xmpp
        xmpp.add_filter("in", seen)
        for plugin in PLUGINS:
            xmpp.register_plugin(plugin)
        for event in EVENTS:
            client._watch(event)
        for ns in notify:
            await xmpp.plugin["xep_0030"].add_feature(f"{ns}+notify")
        # slixmpp's XEP-0131 lists SubID only for the clients made after the first one in a
        # process (a class-level set): list it always, so that equal clients have equal caps
        await xmpp.plugin["xep_0030"].add_feature("http://jabber.org/protocol/shim#SubID")
        # the plugins scheduled caps updates of their own: let them finish first, so that no stale
        # ver (computed before every feature was in) is assigned after ours
        await asyncio.gather(*(t for t in asyncio.all_tasks()
                               if "update_caps" in t.get_coro().__qualname__))
        await xmpp.plugin["xep_0115"].update_caps(broadcast=False)
        xmpp.send_presence()
    client.call(setup)
    client.next("presence", match=lambda p: str(p["from"]) == client.jid)
    return client


def items_of(stanza) -> list:
    """(item id, payload element or None) of a pubsub#event items stanza (slixmpp message)."""
    items = stanza.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items")
    return [(i.get("id"), i[0] if len(i) else None) for i in items.findall(f"{{{EVENT}}}item")]


def event_node(stanza) -> str:
    return stanza.xml.find(f"{{{EVENT}}}event/*").get("node")


def app_condition(exc) -> str | None:
    """The pubsub#errors condition of an IqError, if any (XEP-0060 §7.1.3)."""
    error = exc.iq.xml.find("{jabber:client}error")
    found = error.find(f"{{{ERRORS}}}*") if error is not None else None
    return found.tag.rpartition("}")[2] if found is not None else None


def element(text: str) -> ET.Element:
    return ET.fromstring(text)


def options(**fields) -> str:
    """A publish-options form (XEP-0060 §7.1.5) as XML text."""
    values = "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>" for k, v in fields.items())
    return ("<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' "
            f"type='hidden'><value>{PUBSUB}#publish-options</value></field>{values}</x></publish-options>")


def publish_xml(node: str, payload: str, item_id: str | None = "current", **opts) -> str:
    item = f"<item id='{item_id}'>{payload}</item>" if item_id is not None else f"<item>{payload}</item>"
    return (f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>{item}</publish>"
            + (options(**opts) if opts else "") + "</pubsub>")


def items_xml(node: str, *ids: str, max_items: int | None = None) -> str:
    attrs = f" max_items='{max_items}'" if max_items else ""
    inner = "".join(f"<item id='{i}'/>" for i in ids)
    return f"<pubsub xmlns='{PUBSUB}'><items node='{node}'{attrs}>{inner}</items></pubsub>"


def result_items(result) -> list:
    """(id, payload) of an items result."""
    items = result.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items")
    return [(i.get("id"), i[0] if len(i) else None) for i in items.findall(f"{{{PUBSUB}}}item")]
