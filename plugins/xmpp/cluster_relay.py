"""XMPP stanzas other than messages for sessions on other cluster nodes (issue 14, docs/cluster.md).

Messages cross nodes through the router's hand-off (confirmed, core/cluster.py). What a session
on another node must also see is cast to that node (``core.cluster.cast``, best-effort like
presence itself) and delivered there to its own sessions by the ``on_cluster_cast`` hook
(``XmppServer``):

- ``xmpp.stanza``: a presence stanza for a JID with sessions on other nodes — subscription
  requests and answers (RFC 6121 §3), directed presence (§4.6) and its ``unavailable`` (§4.6.3),
  the presence shown to a contact that starts or stops seeing an account (§3.1.5, §3.2.2). The
  receiving node delivers it as ``visibility.deliver`` does for its own sessions (§8.5);
- ``xmpp.push``: a roster item changed (§2.1.6): the receiving node pushes the item's state, read
  from the shared database, to the interested resources of the account it has;
- ``xmpp.subscribed``: a contact started seeing an account (§3.1.5): the receiving node sends
  the account's last PEP items to the contact's sessions it has (XEP-0163 §6.1.7, ``pep``);
- ``xmpp.blocking``: an account's block list changed (XEP-0191 §3.3, §3.4), cast to every node
  (``everywhere``): each updates its cached copy, pushes the change to the account's interested
  sessions it has and shows or withdraws presence between its own sessions
  (``blocking.BlockLists.received``).
- ``xmpp.iq``: an IQ for a full JID whose session is on the receiving node, from a peer connected
  to this one (an external component, XEP-0114, or a federated server): passed to the session
  as the IQ router passes one from another domain (RFC 6120 §10.5.3.1).
- ``xmpp.sm-take``, ``xmpp.sm-forward``, ``xmpp.sm-ended``, ``xmpp.sm-backlog``: a XEP-0198
  resumption on another node than the one holding the session (``sm_cluster``,
  ``stream_management``).

The stored state (rosters, pending requests, §3.1.3) is in PostgreSQL, so what a cast that was
lost (Redis down) would have shown is still seen at the next roster fetch or login.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from convergence import Address, AddressError

from . import sm_cluster, stream_management
from .stanzas import tag

log = logging.getLogger(__name__)

STANZA, PUSH, SUBSCRIBED, BLOCKING, IQ = "xmpp.stanza", "xmpp.push", "xmpp.subscribed", "xmpp.blocking", "xmpp.iq"


def _nodes(service, to: Address) -> set[str]:
    cluster = service.core.cluster
    return cluster.nodes_of(to) if cluster is not None else set()


class NodeWatcher:
    """The sessions of ``contact`` on another node, as a watcher that takes presence stanzas like
    a session (as ``s2s_presence.RemoteWatcher`` does for another domain)."""

    __slots__ = ("service", "node", "address")

    def __init__(self, service, node: str, contact: Address):
        self.service, self.node, self.address = service, node, contact.bare

    def send(self, element: ET.Element) -> None:
        self.service.core.cluster.cast({self.node}, STANZA, {"xml": ET.tostring(element, encoding="unicode")})


def watchers(service, contact: Address) -> list[NodeWatcher]:
    """One watcher per other node that has sessions of the local account ``contact``."""
    return [NodeWatcher(service, node, contact) for node in sorted(_nodes(service, contact))]


def deliver(service, to: Address, element: ET.Element) -> None:
    """``element`` (addressed to ``to``) to the other nodes that have ``to``: the one with the
    session a full JID names, or every one with a session of the account."""
    if nodes := _nodes(service, to):
        service.core.cluster.cast(nodes, STANZA, {"xml": ET.tostring(element, encoding="unicode")})


def iq(service, to: Address, element: ET.Element) -> bool:
    """The IQ ``element`` to the node that has the session ``to`` (a full JID); False when none has."""
    if nodes := _nodes(service, to):
        service.core.cluster.cast(nodes, IQ, {"xml": ET.tostring(element, encoding="unicode")})
        return True
    return False


def push(service, account: Address, jid: str) -> None:
    """Roster item ``jid`` of ``account`` changed: the other nodes with sessions of ``account``
    push it to theirs."""
    if nodes := _nodes(service, account):
        service.core.cluster.cast(nodes, PUSH, {"account": account.bare.jid, "jid": jid})


def subscribed(service, account: Address, contact: Address) -> None:
    """The local ``contact`` now sees ``account`` (RFC 6121 §3.1.5): the other nodes with
    sessions of ``contact`` give them ``account``'s last PEP items (``SUBSCRIBED``)."""
    if nodes := _nodes(service, contact):
        service.core.cluster.cast(nodes, SUBSCRIBED, {"account": account.bare.jid,
                                                      "contact": contact.bare.jid})


def subscribed_here(service, data: dict) -> None:
    """``SUBSCRIBED`` from another node: this node's available sessions of the contact get the
    account's last PEP items (the IQ router's ``subscribed`` event, as on the node that handled
    the approval)."""
    account, contact = Address.parse(data["account"]), Address.parse(data["contact"])
    sessions = [s for s in service.sessions(contact) if s.available]
    if sessions:
        service.iq.emit("subscribed", service, account, sessions)


def everywhere(service, kind: str, data: dict) -> None:
    """``data`` to every other node, whether it has sessions now or not (what changes a state
    each node caches: a block list, XEP-0191)."""
    cluster = service.core.cluster
    if cluster is not None:
        cluster.cast(cluster.nodes, kind, data)


def received(service, kind: str, data: dict, deliver, push) -> None:
    """A cast from another node (``on_cluster_cast``), for this node's sessions only: given to
    ``deliver`` (``visibility.deliver``) or ``push`` (``roster_push.push``), which call this
    module to reach other nodes (passed in: no import cycle); a block list change to the
    service's lists (``blocking.BlockLists.received``); a resumption on another node to
    ``sm_cluster`` (giving the session up) and ``stream_management`` (ending it, its backlog)."""
    try:
        if kind == STANZA:
            element = ET.fromstring(data["xml"])
            if element.tag != tag("presence") or not element.get("to") or not element.get("from"):
                raise ValueError("not an addressed presence stanza")
            deliver(service, Address.parse(element.get("to")), element, local=True)
        elif kind == PUSH:
            push(service, Address.parse(data["account"]), str(data["jid"]), local=True)
        elif kind == SUBSCRIBED:
            subscribed_here(service, data)
        elif kind == BLOCKING:
            service.blocking.received(data)
        elif kind == sm_cluster.TAKE:
            service.moves.take(data)
        elif kind == sm_cluster.FORWARD:
            service.moves.forwarded(data)
        elif kind == stream_management.ENDED:
            stream_management.ended_elsewhere(service, data)
        elif kind == stream_management.BACKLOG:
            stream_management.backlog(service, data)
        elif kind == IQ:
            element = ET.fromstring(data["xml"])
            if element.tag != tag("iq"):
                raise ValueError("not an IQ")
            session = service.session(Address.from_jid(element.get("to") or ""))
            if session is not None:  # gone meanwhile: the IQ is lost as with a session that closes
                session.send(element)
    except (KeyError, TypeError, ValueError, ET.ParseError, AddressError) as exc:
        log.warning("cluster: ignored a bad %s cast: %s", kind, exc)
