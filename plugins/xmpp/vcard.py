"""vcard-temp (XEP-0054): an account publishes its own vCard; anyone may read an account's.

The server answers for the account (§3.3: requests to a bare JID are never forwarded to the
account's resources). A missing vCard and a missing account give the same ``item-not-found``
(§3.3, against directory harvesting); an account reading its own missing vCard gets an empty one.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from convergence import Address
from convergence.store import accounts

from . import vcard_store
from .stanzas import StanzaError, iq_result

NS = "vcard-temp"
VCARD = f"{{{NS}}}vCard"


def register_iq(router) -> None:
    router.register(VCARD, vcard, features=(NS,), to_account=True)


def vcard(service, session, iq: ET.Element) -> ET.Element:
    own = session.account
    owner = Address.parse(iq.get("to")).bare if iq.get("to") else own
    if not owner.local:
        raise StanzaError("item-not-found", "the server has no vCard")
    db = service.core.db
    if iq.get("type") == "set":
        if owner != own:
            raise StanzaError("forbidden", "only your own vCard can be published")  # §3.2
        service.iq.emit("vcard", service, own, iq[0])  # the avatar follows (XEP-0153, XEP-0398)
        vcard_store.save(db, own.local, ET.tostring(iq[0], encoding="unicode"))
        return iq_result(iq)
    stored = vcard_store.get(db, owner.local) if accounts.exists(db, owner.local) else None
    if stored is None:
        if owner != own:
            raise StanzaError("item-not-found", f"no vCard for {owner}")
        return iq_result(iq, ET.Element(VCARD))
    return iq_result(iq, ET.fromstring(stored))
