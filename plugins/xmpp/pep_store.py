"""PEP repository (XEP-0163 on XEP-0060): each account's nodes, their items and whitelists.

The tables belong to the XMPP plugin (revision ``xmpp_0002`` of its Alembic branch ``xmpp``):
``pep_nodes`` (one row per account and node, the node's configuration as JSON), ``pep_items``
(the items, their order is ``id``: a republished item id moves to the end, XEP-0060 §7.1.2) and
``pep_affiliations`` (the owner's whitelist, XEP-0060 §4.5 ``member``). Deleting an account or a
node deletes what hangs off it. Limits are the caller's (``[xmpp] pep_max_*``): ``publish`` keeps
at most ``max_items`` items per node, dropping the oldest (§7.1.1), and refuses a node beyond
``max_nodes`` per account with :class:`TooManyNodes`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (JSON, DateTime, ForeignKey, String, Text, UniqueConstraint, delete, func,
                        select)
from sqlalchemy.orm import Mapped, mapped_column

from convergence.store import Database
from convergence.store.accounts import lookup
from convergence.store.models import Account, Base, utcnow


class PepNode(Base):
    """A PEP node of an account (XEP-0163 §4), its configuration (XEP-0060 §16.4.4) as JSON."""

    __tablename__ = "pep_nodes"
    __table_args__ = (UniqueConstraint("account_id", "node"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    node: Mapped[str] = mapped_column(String(255))
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PepItem(Base):
    """One published item (XEP-0060 §7.1), its payload serialized as the publisher sent it."""

    __tablename__ = "pep_items"
    __table_args__ = (UniqueConstraint("node_id", "item_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("pep_nodes.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[str] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text)
    publisher: Mapped[str] = mapped_column(String(3071))
    published_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PepAffiliation(Base):
    """A bare JID the owner gave an affiliation to (XEP-0060 §8.9): ``member`` of a whitelist."""

    __tablename__ = "pep_affiliations"

    node_id: Mapped[int] = mapped_column(ForeignKey("pep_nodes.id", ondelete="CASCADE"),
                                         primary_key=True)
    jid: Mapped[str] = mapped_column(String(3071), primary_key=True)
    affiliation: Mapped[str] = mapped_column(String(16))


class TooManyNodes(Exception):
    """The account has ``max_nodes`` nodes already."""


@dataclass(frozen=True)
class Node:
    name: str
    config: dict
    members: frozenset = frozenset()  # bare JIDs affiliated as member or publisher


@dataclass(frozen=True)
class Item:
    id: str
    payload: str


# -- reading --
def _node_row(session, account: str, name: str) -> PepNode | None:
    return session.scalar(select(PepNode).join(Account, Account.id == PepNode.account_id)
                          .where(Account.name == account, PepNode.node == name))


def _members(session, node_id: int) -> frozenset:
    return frozenset(session.scalars(select(PepAffiliation.jid).where(
        PepAffiliation.node_id == node_id, PepAffiliation.affiliation.in_(("member", "publisher")))))


def _node(session, row: PepNode) -> Node:
    """The node of ``row``; its whitelist is read only when the access model uses it."""
    whitelisted = row.config.get("access_model") == "whitelist"
    return Node(row.node, dict(row.config), _members(session, row.id) if whitelisted else frozenset())


def node(db: Database, account: str, name: str) -> Node | None:
    with db.read() as session:
        row = _node_row(session, account, name)
        return None if row is None else _node(session, row)


def nodes_of(db: Database, account: str) -> list[Node]:
    """``account``'s nodes by name, with their whitelists (disco#items, XEP-0163 §7)."""
    with db.read() as session:
        rows = session.scalars(select(PepNode).join(Account, Account.id == PepNode.account_id)
                               .where(Account.name == account).order_by(PepNode.node)).all()
        return [_node(session, row) for row in rows]


def items(db: Database, account: str, name: str, ids=None, last: int | None = None) -> list[Item]:
    """Items of a node oldest first: those with ``ids``, or the ``last`` newest, or all (one query)."""
    with db.read() as session:
        query = (select(PepItem.item_id, PepItem.payload).join(PepNode, PepNode.id == PepItem.node_id)
                 .join(Account, Account.id == PepNode.account_id)
                 .where(Account.name == account, PepNode.node == name))
        if ids is not None:
            query = query.where(PepItem.item_id.in_(list(ids)))
        if last is not None:
            found = session.execute(query.order_by(PepItem.id.desc()).limit(last)).all()
            return [Item(*r) for r in reversed(found)]
        return [Item(*r) for r in session.execute(query.order_by(PepItem.id))]


def last_items(db: Database, accounts: list[str], names) -> list[tuple[str, Node, Item]]:
    """(account, node, its newest item) for the nodes named in ``names`` of each of ``accounts``
    (the last published item, XEP-0163 §6.1.2): three queries, whatever the number of accounts."""
    names = list(names)
    with db.read() as session:
        rows = session.execute(select(Account.name, PepNode).join(Account, Account.id == PepNode.account_id)
                               .where(Account.name.in_(accounts), PepNode.node.in_(names))
                               .order_by(Account.name, PepNode.node)).all()
        ids = [row.id for _, row in rows]
        if not ids:
            return []
        newest = (select(func.max(PepItem.id).label("id")).where(PepItem.node_id.in_(ids))
                  .group_by(PepItem.node_id).subquery())
        found = {node_id: Item(item_id, payload) for node_id, item_id, payload in session.execute(
            select(PepItem.node_id, PepItem.item_id, PepItem.payload).join(newest, PepItem.id == newest.c.id))}
        members: dict[int, set] = {}
        for node_id, jid in session.execute(select(PepAffiliation.node_id, PepAffiliation.jid).where(
                PepAffiliation.node_id.in_(ids), PepAffiliation.affiliation.in_(("member", "publisher")))):
            members.setdefault(node_id, set()).add(jid)
        return [(account, Node(row.node, dict(row.config), frozenset(members.get(row.id, ()))), found[row.id])
                for account, row in rows if row.id in found]


# -- changing --
def _create(session, account: str, name: str, config: dict, max_nodes: int) -> PepNode:
    account_id = lookup(session, account)
    count = session.scalar(select(func.count()).select_from(PepNode).where(PepNode.account_id == account_id))
    if count >= max_nodes:
        raise TooManyNodes(account)
    row = PepNode(account_id=account_id, node=name, config=dict(config))
    session.add(row)
    session.flush()
    return row


def create(db: Database, account: str, name: str, config: dict, max_nodes: int) -> bool:
    """Create the node; False when it exists already."""
    with db.write() as session:
        if _node_row(session, account, name) is not None:
            return False
        _create(session, account, name, config, max_nodes)
        return True


def configure(db: Database, account: str, name: str, config: dict, max_items: int) -> list[str]:
    """Replace a node's configuration; the ids of the items a smaller ``max_items`` dropped."""
    with db.write() as session:
        row = _node_row(session, account, name)
        row.config = dict(config)
        return _trim(session, row.id, max_items)


def publish(db: Database, account: str, name: str, item: Item, publisher: str, config: dict,
            max_items: int, max_nodes: int) -> tuple[bool, list[str]]:
    """Store ``item`` in the node, creating it with ``config`` when missing (XEP-0163 §3 auto-create).

    Returns (created, ids of the items dropped to keep ``max_items``)."""
    with db.write() as session:
        row = _node_row(session, account, name)
        created = row is None
        if created:
            row = _create(session, account, name, config, max_nodes)
        session.execute(delete(PepItem).where(PepItem.node_id == row.id, PepItem.item_id == item.id))
        session.add(PepItem(node_id=row.id, item_id=item.id, payload=item.payload, publisher=publisher))
        session.flush()
        return created, _trim(session, row.id, max_items)


def _trim(session, node_id: int, max_items: int) -> list[str]:
    old = session.execute(select(PepItem.id, PepItem.item_id).where(PepItem.node_id == node_id)
                          .order_by(PepItem.id.desc()).offset(max_items)).all()
    if old:
        session.execute(delete(PepItem).where(PepItem.id.in_([r[0] for r in old])))
    return [r[1] for r in old]


def retract(db: Database, account: str, name: str, item_id: str) -> bool:
    """Delete one item; False when the node has no such item."""
    with db.write() as session:
        row = _node_row(session, account, name)
        if row is None:
            return False
        return session.execute(delete(PepItem).where(PepItem.node_id == row.id,
                                                      PepItem.item_id == item_id)).rowcount > 0


def purge(db: Database, account: str, name: str) -> None:
    with db.write() as session:
        row = _node_row(session, account, name)
        session.execute(delete(PepItem).where(PepItem.node_id == row.id))


def remove(db: Database, account: str, name: str) -> bool:
    """Delete the node with its items and affiliations; False when there was none."""
    with db.write() as session:
        row = _node_row(session, account, name)
        if row is None:
            return False
        session.execute(delete(PepItem).where(PepItem.node_id == row.id))
        session.execute(delete(PepAffiliation).where(PepAffiliation.node_id == row.id))
        session.delete(row)
        return True


def affiliations(db: Database, account: str, name: str) -> dict[str, str]:
    with db.read() as session:
        row = _node_row(session, account, name)
        return dict(session.execute(select(PepAffiliation.jid, PepAffiliation.affiliation)
                                    .where(PepAffiliation.node_id == row.id)).all())


def set_affiliations(db: Database, account: str, name: str, changes: dict[str, str],
                     max_count: int) -> bool:
    """Apply ``{jid: affiliation}`` (``none`` removes); False when more than ``max_count`` result."""
    with db.write() as session:
        row = _node_row(session, account, name)
        current = dict(session.execute(select(PepAffiliation.jid, PepAffiliation.affiliation)
                                       .where(PepAffiliation.node_id == row.id)).all())
        for jid, affiliation in changes.items():
            if affiliation == "none":
                current.pop(jid, None)
            else:
                current[jid] = affiliation
        if len(current) > max_count:
            return False
        session.execute(delete(PepAffiliation).where(PepAffiliation.node_id == row.id))
        session.add_all(PepAffiliation(node_id=row.id, jid=j, affiliation=a) for j, a in current.items())
        return True
