"""User Avatar (XEP-0084) kept consistent with vCard-based avatars (XEP-0153), as XEP-0398 describes.

The avatar lives in two PEP nodes (``pep.py``): ``urn:xmpp:avatar:data`` (the image, base64, item
id = its SHA-1) and ``urn:xmpp:avatar:metadata`` (``<info bytes id type/>``; an empty
``<metadata/>`` means no avatar, XEP-0084 §4.5). The server keeps the vCard's ``PHOTO`` the same:

- **metadata published** (``pep-published``, XEP-0398 §3.1): the vCard's ``PHOTO`` becomes the
  image of the first ``<info/>`` without ``url`` whose data item is stored and whose SHA-1 is the
  info's id, or is removed for an empty ``<metadata/>``; the rest of the vCard is kept. The
  account's available sessions then show the new hash to their contacts;
- **vCard set with a PHOTO** (vcard-temp, the ``vcard`` event, XEP-0398 §3.2): the image is
  published to the data node, then its ``<info/>`` (``type`` from the vCard) to the metadata node,
  both created ``open`` like the vCard itself, with notifications; a vCard without ``PHOTO``
  publishes an empty ``<metadata/>`` when there was an avatar. A PHOTO that is not base64 is
  refused (``bad-request``), one over ``pep_max_item_size`` is ``not-acceptable`` +
  ``payload-too-big``, and the vCard is then not stored;
- **presence** (XEP-0398 §4, XEP-0153 §4.1): every available presence an account broadcasts or
  directs carries ``<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>`` with the current
  hash (``<photo/>`` empty: no avatar), added when missing, filled into an ``<x/>`` without
  ``<photo/>``, and replacing a different hash; a client's empty ``<photo/>`` is left alone. The
  hash is the metadata's, or for an account that has a vCard PHOTO but never published to PEP
  (stored before this server converted), the SHA-1 of that PHOTO.

The account's disco#info lists ``urn:xmpp:pep-vcard-conversion:0`` (XEP-0398 §2).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import xml.etree.ElementTree as ET
from types import MappingProxyType

from convergence import Address

from . import pep, pep_store, vcard_store
from .stanzas import StanzaError
from .visibility import own, send, watchers

DATA = "urn:xmpp:avatar:data"
METADATA = "urn:xmpp:avatar:metadata"
UPDATE = "vcard-temp:x:update"
VCARD = "vcard-temp"
CONVERSION = "urn:xmpp:pep-vcard-conversion:0"
NO_AVATAR = "current"  # the item id of an empty <metadata/> (XEP-0084 §4.5)
OPEN = MappingProxyType({"access_model": "open"})  # as readable as the vCard (XEP-0054 §3.3)


def register_iq(router) -> None:
    router.account_feature(CONVERSION)
    router.on("presence", stamp)
    router.on("directed", stamp)
    router.on("vcard", vcard_set)
    router.on("pep-published", published)


def current_hash(service, account: Address) -> str | None:
    """The account's avatar hash from the metadata node: "" for none, None when it has no node."""
    found = pep_store.items(service.core.db, account.local, METADATA, last=1)
    if not found:
        return None
    info = _info(ET.fromstring(found[0].payload))
    return "" if info is None else info.get("id", "")


def _shown_hash(service, account: Address) -> str:
    """The hash presence shows (XEP-0398 §4): the metadata's, else the stored vCard PHOTO's."""
    digest = current_hash(service, account)
    if digest is not None:
        return digest
    stored = vcard_store.get(service.core.db, account.local)
    try:
        photo = _photo(ET.fromstring(stored)) if stored else None
    except StanzaError:
        photo = None
    return hashlib.sha1(photo[0]).hexdigest() if photo else ""


def _info(metadata: ET.Element) -> ET.Element | None:
    return next((i for i in metadata.findall(f"{{{METADATA}}}info") if not i.get("url")), None)


def stamp(service, session, element: ET.Element, changed: bool = False) -> None:
    """The avatar hash into an available presence (XEP-0398 §4); ``changed``: the avatar was
    just changed, so even an empty ``<photo/>`` gets the new hash."""
    if element.get("type") is not None:
        return
    x = element.find(f"{{{UPDATE}}}x")
    photo = x.find(f"{{{UPDATE}}}photo") if x is not None else None
    if photo is not None and not (photo.text or "").strip() and not changed:
        return  # the client says "no avatar" or "not ready": left alone
    digest = _shown_hash(service, session.account)
    if x is None:
        x = ET.SubElement(element, f"{{{UPDATE}}}x")
    if photo is None:
        photo = ET.SubElement(x, f"{{{UPDATE}}}photo")
    photo.text = digest or None


def _photo(vcard: ET.Element) -> tuple[bytes, str] | None:
    photo = vcard.find(f"{{{VCARD}}}PHOTO")
    text = photo.findtext(f"{{{VCARD}}}BINVAL") if photo is not None else None
    if not text or not text.strip():
        return None
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise StanzaError("bad-request", "the vCard PHOTO's BINVAL is not base64") from None
    return data, (photo.findtext(f"{{{VCARD}}}TYPE") or "image/png").strip()


def vcard_set(service, account: Address, vcard: ET.Element) -> None:
    """A vCard is being stored: publish its PHOTO as the avatar (XEP-0398 §5)."""
    photo = _photo(vcard)
    publisher = account.jid
    if photo is None:
        if current_hash(service, account):
            pep.publish_item(service, account, METADATA, NO_AVATAR, ET.Element(f"{{{METADATA}}}metadata"),
                             publisher, defaults=OPEN)
        return
    data, mime = photo
    digest = hashlib.sha1(data).hexdigest()
    if current_hash(service, account) == digest:
        return
    payload = ET.Element(f"{{{DATA}}}data")
    payload.text = base64.b64encode(data).decode()
    pep.publish_item(service, account, DATA, digest, payload, publisher, defaults=OPEN)
    metadata = ET.Element(f"{{{METADATA}}}metadata")
    ET.SubElement(metadata, f"{{{METADATA}}}info", {"bytes": str(len(data)), "id": digest, "type": mime})
    pep.publish_item(service, account, METADATA, digest, metadata, publisher, defaults=OPEN)


def published(service, owner: Address, node: str, item_id: str, payload: ET.Element) -> None:
    """Avatar metadata published: the vCard's PHOTO follows (XEP-0398 §4), contacts see the hash."""
    if node != METADATA:
        return
    db = service.core.db
    stored = vcard_store.get(db, owner.local)
    vcard = ET.fromstring(stored) if stored else ET.Element(f"{{{VCARD}}}vCard")
    try:
        photo = _photo(vcard)
    except StanzaError:
        photo = None
    have = hashlib.sha1(photo[0]).hexdigest() if photo else ""
    info = _info(payload)
    if info is None:
        changed = photo is not None
        for old in vcard.findall(f"{{{VCARD}}}PHOTO"):
            vcard.remove(old)
    else:
        changed = have != info.get("id")
        found = pep_store.items(db, owner.local, DATA, ids=[info.get("id", "")]) if changed else []
        if found and not _matches(found[0].payload, info.get("id", "")):
            found = []  # XEP-0398 §3.1: the image's SHA-1 must be the id
        if found:
            for old in vcard.findall(f"{{{VCARD}}}PHOTO"):
                vcard.remove(old)
            element = ET.SubElement(vcard, f"{{{VCARD}}}PHOTO")
            ET.SubElement(element, f"{{{VCARD}}}TYPE").text = info.get("type", "image/png")
            ET.SubElement(element, f"{{{VCARD}}}BINVAL").text = (ET.fromstring(found[0].payload).text or "").strip()
        else:
            changed = False
    if changed:
        vcard_store.save(db, owner.local, ET.tostring(vcard, encoding="unicode"))
    _announce(service, owner)


def _matches(payload: str, digest: str) -> bool:
    try:
        data = base64.b64decode("".join((ET.fromstring(payload).text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hashlib.sha1(data).hexdigest() == digest


def _announce(service, owner: Address) -> None:
    """Each available session's presence again if its hash changed (XEP-0153 §4.1: contacts
    learn of the new avatar from presence)."""
    targets = watchers(service, owner) + own(service, owner)
    for session in own(service, owner):
        last = service.last_presence.get(session.address)
        if last is None:
            continue
        before = last[1].findtext(f"{{{UPDATE}}}x/{{{UPDATE}}}photo")
        stamp(service, session, last[1], changed=True)
        if last[1].findtext(f"{{{UPDATE}}}x/{{{UPDATE}}}photo") != before:
            send(targets, last[1], session.address)
