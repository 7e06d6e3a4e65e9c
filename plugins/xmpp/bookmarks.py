"""PEP native bookmarks (XEP-0402 ``urn:xmpp:bookmarks:1``) kept in step with the private XML
bookmarks of XEP-0048 (``storage:bookmarks`` in XEP-0049 storage), as XEP-0411 describes.

Bookmarks 2 are ordinary PEP items (``pep.py``): one per room, its id the room's JID, its payload a
``<conference/>``. The server converts between the two forms (XEP-0402 §5.3, advertised as
``urn:xmpp:bookmarks:1#compat`` on the account):

- a private XML ``get`` of ``storage:bookmarks`` is made from the node's items (``legacy``): each
  ``<conference/>`` with ``jid``, ``name``, ``autojoin``, ``<nick/>``, ``<password/>``; the
  ``<url/>`` bookmarks, which Bookmarks 2 has no place for, come from the stored private XML;
- a private XML ``set`` (``from_legacy``) publishes each changed room to the node and retracts the
  rooms no longer listed, with the usual notifications; a node made this way has the options
  XEP-0402 §3 asks for (``whitelist``, ``max_items`` ``max``, ``send_last_published_item``
  ``never``). Rooms that did not change keep their item as it was (its ``<extensions/>``).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from types import MappingProxyType

from convergence import Address, AddressError

from . import pep, pep_store
from .stanzas import StanzaError

NS = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
LEGACY_STORAGE = f"{{{LEGACY}}}storage"
NODE_CONFIG = MappingProxyType({"access_model": "whitelist", "max_items": "max",
                                "persist_items": "true", "send_last_published_item": "never"})


def register_iq(router) -> None:
    router.account_feature(f"{NS}#compat")


def _room(conference: ET.Element, ns: str) -> tuple:
    """What both forms say of a room: (name, autojoin, nick, password)."""
    autojoin = conference.get("autojoin", "false").strip().lower() in ("1", "true")
    return (conference.get("name"), autojoin, conference.findtext(f"{{{ns}}}nick"),
            conference.findtext(f"{{{ns}}}password"))


def legacy(service, account: Address, stored: ET.Element) -> ET.Element:
    """The XEP-0048 ``<storage/>`` of ``account``: the node's rooms and the stored URLs."""
    db = service.core.db
    if pep_store.node(db, account.local, NS) is None:
        return stored
    storage = ET.Element(LEGACY_STORAGE)
    for item in pep_store.items(db, account.local, NS):
        conference = ET.fromstring(item.payload)
        if conference.tag != f"{{{NS}}}conference":
            continue
        name, autojoin, nick, password = _room(conference, NS)
        attrs = {"jid": item.id, "autojoin": "true" if autojoin else "false"}
        if name is not None:
            attrs["name"] = name
        room = ET.SubElement(storage, f"{{{LEGACY}}}conference", attrs)
        for child, text in (("nick", nick), ("password", password)):
            if text is not None:
                ET.SubElement(room, f"{{{LEGACY}}}{child}").text = text
    storage.extend(stored.findall(f"{{{LEGACY}}}url"))
    return storage


def from_legacy(service, session, storage: ET.Element) -> None:
    """A stored XEP-0048 ``<storage/>``: publish and retract so the node lists the same rooms."""
    account = session.account
    wanted: dict[str, tuple] = {}
    for conference in storage.findall(f"{{{LEGACY}}}conference"):
        try:
            room = Address.parse(conference.get("jid") or "")
        except AddressError:
            raise StanzaError("not-acceptable", "a bookmarked conference needs a room JID") from None
        if not room.local or room.resource:
            raise StanzaError("not-acceptable", "a bookmarked conference is a bare room JID")
        wanted[room.jid] = _room(conference, LEGACY)
    if len(wanted) > service.settings["pep_max_items"]:
        raise StanzaError("not-acceptable", f"at most {service.settings['pep_max_items']} bookmarks")
    current = {item.id: _room(ET.fromstring(item.payload), NS)
               for item in pep_store.items(service.core.db, account.local, NS)}
    for jid, room in wanted.items():
        if current.get(jid) != room:
            pep.publish_item(service, account, NS, jid, _conference(room), session.address.jid,
                             defaults=NODE_CONFIG)
    for jid in current.keys() - wanted.keys():
        pep.retract_item(service, account, NS, jid, notify=True)


def _conference(room: tuple) -> ET.Element:
    name, autojoin, nick, password = room
    conference = ET.Element(f"{{{NS}}}conference", {"autojoin": "true" if autojoin else "false"})
    if name is not None:
        conference.set("name", name)
    for child, text in (("nick", nick), ("password", password)):
        if text is not None:
            ET.SubElement(conference, f"{{{NS}}}{child}").text = text
    return conference
