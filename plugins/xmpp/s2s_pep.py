"""PEP (XEP-0163) with contacts of other domains (issue 13, issue 15). No I/O here: stanzas go
out through ``service.federation.send``.

Events *from* remote accounts need nothing of their own: a remote server's headline
``<message/>`` with ``<event/>`` comes in over s2s like any message (``s2s_routing``) and reaches
the addressed session with its payload; the remote server learns our clients' interests from the
caps in the presence we broadcast and a disco#info query that crosses to the client.

Events *to* remote contacts: the capabilities of remote entities are learned as for local sessions
(XEP-0115 §6.3, ``caps.py``) from the presence they send us (``learn``): a ``ver`` already
verified gives the features at once, else the server asks the remote full JID for disco#info over
federation, the answer arriving through the IQ router's awaited answers. Entries are kept per
remote full JID (at most ``caps_cache_size``, the least recently seen forgotten first) until its
unavailable presence. A publish or retract then also goes (``notify``) to every remote full JID
that asked for ``node+notify``, whose bare JID has a subscription ``from``/``both`` in the owner's
roster and may read the node (access model ``presence``: that subscription; ``open``: anyone;
``whitelist``: the members). When a remote entity's interests become known, it gets the last
item of each such node of the local accounts whose presence it sees (XEP-0163 §6.1.2).
"""
from __future__ import annotations

import copy
import logging
import xml.etree.ElementTree as ET

from convergence import Address, RoutingError
from convergence.store import roster

from . import caps as capabilities
from . import s2s_presence

log = logging.getLogger(__name__)


def learn(service, sender: Address, element: ET.Element, last_items) -> None:
    """A presence from ``sender`` (a remote JID): its capabilities (XEP-0115 §6.3);
    ``last_items(remote full JID)`` runs once they are known."""
    known = service.caps.remote
    if sender.resource is None or service.federation is None:
        return
    kind = element.get("type")
    if kind == "unavailable":
        known.pop(sender, None)
        return
    if kind is not None:
        return
    algo, ver, node = capabilities.announced(element)
    if not ver:
        known.pop(sender, None)
        return
    current = known.get(sender)
    if current is not None and current[:2] == (algo, ver):
        known.move_to_end(sender)
        return
    cached = service.caps.cached((algo, ver)) if algo in capabilities.HASHES else None
    _remember(service, sender, (algo, ver, cached))
    if cached is not None:
        return last_items(sender)
    iq_id, iq = capabilities.query(service, sender.jid, ver, node)

    def answered(reply: ET.Element) -> None:
        entry = known.get(sender)
        if entry is None or entry[:2] != (algo, ver):
            return  # gone, or announced other capabilities meanwhile
        known[sender] = (algo, ver, capabilities.learned(service.caps, reply, algo, ver))
        last_items(sender)

    service.iq.expect(sender.jid, iq_id, answered)
    try:
        service.federation.send(sender.domain, iq)
    except RoutingError as exc:
        log.info("s2s: cannot ask %s for its capabilities: %s", sender, exc)


def _remember(service, sender: Address, entry: tuple) -> None:
    known = service.caps.remote
    known[sender] = entry
    known.move_to_end(sender)
    while len(known) > service.caps.cache_size:
        known.popitem(last=False)


def notify_set(service, address: Address) -> frozenset:
    """The nodes the remote entity at ``address`` asked for with ``node+notify``."""
    entry = service.caps.remote.get(address)
    features = (entry[2] or frozenset()) if entry else frozenset()
    return frozenset(f[:-len(capabilities.NOTIFY)] for f in features if f.endswith(capabilities.NOTIFY))


def readers(service, owner: Address, node) -> list[Address]:
    """The remote full JIDs to tell about ``node`` of ``owner``."""
    if service.federation is None or not service.caps.remote:
        return []
    watching = {w.address.bare for w in s2s_presence.watchers(service, owner)}
    return [address for address in service.caps.remote
            if address.bare in watching and node.name in notify_set(service, address)
            and may_read(address, node)]


def may_read(address: Address, node) -> bool:
    """For a remote contact that sees the owner's presence: the node's access model allows it."""
    return node.config.get("access_model", "presence") != "whitelist" or address.bare.jid in node.members


def send(service, to: Address, message: ET.Element) -> None:
    """``message`` (from the owner's bare JID) to the remote ``to``."""
    copied = copy.deepcopy(message)
    copied.set("to", to.jid)
    try:
        service.federation.send(to.domain, copied)
    except RoutingError as exc:
        log.info("s2s: PEP event to %s not sent: %s", to, exc)


def notify(service, owner: Address, node, message: ET.Element) -> None:
    """XEP-0163 §4.3 for remote contacts: ``message`` to each of ``readers``."""
    for address in readers(service, owner, node):
        send(service, address, message)


def known(service, contact: Address) -> list[Address]:
    """The remote full JIDs of ``contact``'s account whose capabilities we know."""
    if contact.domain == service.domain:
        return []
    return [a for a in service.caps.remote if a.bare == contact.bare]


def owners_seen_by(service, address: Address) -> list[Address]:
    """The local accounts whose presence the remote ``address`` sees (``from``/``both``)."""
    return [service.core.address(name) for name in roster.shown_to(service.core.db, address.bare.jid)]
