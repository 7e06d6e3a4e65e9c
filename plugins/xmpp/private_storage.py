"""Private XML storage (XEP-0049, ``jabber:iq:private``): an account keeps XML only it can read.

Each element is stored under its qualified name (``{namespace}local``) and given back whole; a
``set`` may carry several, each replacing the stored one of that name. Only the account itself:
a query to another account is ``forbidden`` (§3). An element in no namespace or in
``jabber:iq:private`` is ``not-acceptable`` (§3); one bigger than ``[xmpp] private_max_size``
bytes, or one more than ``private_max_elements`` kinds per account, is ``not-acceptable`` too. A
``get`` of what was never stored gives the empty element back (§2).

``storage:bookmarks`` is converted to and from PEP native bookmarks (XEP-0411 via ``bookmarks.py``):
what a ``get`` returns is the bookmarks node's conferences (plus the stored ``<url/>``s) and a
``set`` publishes and retracts in that node.

The ``private_xml`` table (revision ``xmpp_0002``) belongs to the XMPP plugin.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, Text, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from convergence import Address
from convergence.store import Database
from convergence.store.accounts import lookup
from convergence.store.models import Account, Base, utcnow

from . import bookmarks
from .stanzas import StanzaError, iq_result, tag

NS = "jabber:iq:private"
MAX_NAME = 1279  # characters of '{namespace}local'


class PrivateXml(Base):
    """One private XML element of an account (XEP-0049), by qualified name."""

    __tablename__ = "private_xml"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            primary_key=True)
    element: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    data: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


def get(db: Database, account: str, name: str) -> str | None:
    with db.read() as session:
        return session.scalar(select(PrivateXml.data).join(Account, Account.id == PrivateXml.account_id)
                              .where(Account.name == account, PrivateXml.element == name))


def save(db: Database, account: str, elements: dict[str, str], max_elements: int) -> bool:
    """Store ``{name: xml}``; False (nothing stored) when the account would hold too many kinds."""
    with db.write() as session:
        account_id = lookup(session, account)
        replaced = PrivateXml.element.in_(list(elements))
        others = session.scalar(select(func.count()).select_from(PrivateXml)
                                .where(PrivateXml.account_id == account_id, ~replaced))
        if others + len(elements) > max_elements:
            return False
        session.execute(delete(PrivateXml).where(PrivateXml.account_id == account_id, replaced))
        session.add_all(PrivateXml(account_id=account_id, element=n, data=d) for n, d in elements.items())
        return True


def register_iq(router) -> None:
    router.register(tag("query", NS), private_iq, features=(NS,), to_account=True)


def _checked(element: ET.Element) -> str:
    name = element.tag
    if not name.startswith("{") or name.startswith("{" + NS + "}") or len(name) > MAX_NAME:
        raise StanzaError("not-acceptable", "private XML needs a namespace of its own (XEP-0049 §3)")
    return name


def private_iq(service, session, iq: ET.Element) -> ET.Element:
    if iq.get("to") and Address.parse(iq.get("to")).bare != session.account:
        raise StanzaError("forbidden", "private XML is only the account's own")  # §3
    children = list(iq[0])
    if not children:
        raise StanzaError("not-acceptable", "name the element to get or set")
    db, account = service.core.db, session.account
    if iq.get("type") == "get":
        if len(children) != 1:
            raise StanzaError("not-acceptable", "get one element at a time")
        name = _checked(children[0])
        stored = get(db, account.local, name)
        element = ET.fromstring(stored) if stored is not None else ET.Element(name)
        if name == bookmarks.LEGACY_STORAGE:
            element = bookmarks.legacy(service, account, element)
        query = ET.Element(tag("query", NS))
        query.append(element)
        return iq_result(iq, query)
    limit = service.settings["private_max_size"]
    elements = {}
    for child in children:
        text = ET.tostring(child, encoding="unicode")
        if len(text.encode()) > limit:
            raise StanzaError("not-acceptable", f"a private XML element is at most {limit} bytes")
        elements[_checked(child)] = text
    if bookmarks.LEGACY_STORAGE in elements:  # XEP-0411 §4: the PEP node follows
        bookmarks.from_legacy(service, session, ET.fromstring(elements[bookmarks.LEGACY_STORAGE]))
    if not save(db, account.local, elements, service.settings["private_max_elements"]):
        raise StanzaError("not-acceptable", "too many kinds of private XML for one account")
    return iq_result(iq)
