"""Service discovery (XEP-0030), XMPP ping (XEP-0199) and software version (XEP-0092).

disco#info on the server lists an ``server/im`` identity and every feature the IQ handlers declare
(``service.iq.features(service)``); on an account's bare JID it answers for the account (``account/registered``,
XEP-0030 §3.1, with what ``router.account_identity``/``account_feature`` add: PEP), and ``service-unavailable`` when there is no such account (RFC 6121 §8.5.1).
disco#items on the server lists nothing yet (no components); on an account, what the router's
``account_items`` give (the PEP nodes the asker may read). Ping and version answer for the server. A
get-only namespace sent as ``set`` is ``feature-not-implemented`` (RFC 6120 §8.3.3.3).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

import convergence
from convergence import Address
from convergence.store import accounts

from .stanzas import StanzaError, iq_result, tag

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PING = "urn:xmpp:ping"
VERSION = "jabber:iq:version"


def _get(stanza) -> None:
    if stanza.get("type") != "get":
        raise StanzaError("feature-not-implemented", "only get is defined")
    if stanza[0].get("node"):
        raise StanzaError("item-not-found", "no such node")  # XEP-0030 §3.2


def _account(service, stanza):
    """The bare account JID the query is addressed to, or None for the server."""
    account = Address.from_jid(stanza.get("to")).bare if stanza.get("to") else None
    if account is None or account.local is None:
        return None
    if not accounts.exists(service.core.db, account.local):
        raise StanzaError("service-unavailable")
    return account


def register_iq(router) -> None:
    router.register(tag("query", DISCO_INFO), disco_info, features=(DISCO_INFO,), to_account=True)
    router.register(tag("query", DISCO_ITEMS), disco_items, features=(DISCO_ITEMS,), to_account=True)
    router.register(tag("ping", PING), ping, features=(PING,))
    router.register(tag("query", VERSION), version, features=(VERSION,))


def disco_info(service, session, stanza):
    _get(stanza)
    query = ET.Element(tag("query", DISCO_INFO))
    account = _account(service, stanza)
    if account is not None:
        ET.SubElement(query, tag("identity", DISCO_INFO), category="account", type="registered")
        for category, kind in service.iq.account_identities():  # the PEP service (XEP-0163 §1)
            ET.SubElement(query, tag("identity", DISCO_INFO), category=category, type=kind)
        names = [DISCO_INFO, *service.iq.account_features()]
    else:
        ET.SubElement(query, tag("identity", DISCO_INFO), category="server", type="im", name="Convergence")
        names = service.iq.features(service)
    extras = service.iq.server_extras(service) if account is None else []
    query.extend(e for e in extras if e.tag == tag("identity", DISCO_INFO))
    for name in names:
        ET.SubElement(query, tag("feature", DISCO_INFO), var=name)
    query.extend(e for e in extras if e.tag != tag("identity", DISCO_INFO))  # XEP-0128 forms
    return iq_result(stanza, query)


def disco_items(service, session, stanza):
    _get(stanza)
    account = _account(service, stanza)
    query = ET.Element(tag("query", DISCO_ITEMS))
    for jid, node in service.iq.items_of_account(service, session, account) if account else ():
        ET.SubElement(query, tag("item", DISCO_ITEMS), jid=jid, node=node)
    for jid, name in service.iq.server_items() if account is None else ():
        ET.SubElement(query, tag("item", DISCO_ITEMS), jid=jid, name=name)  # the MUC service
    return iq_result(stanza, query)


def ping(service, session, stanza):
    _get(stanza)
    return iq_result(stanza)


def version(service, session, stanza):
    _get(stanza)
    query = ET.Element(tag("query", VERSION))
    ET.SubElement(query, tag("name", VERSION)).text = "Convergence"
    ET.SubElement(query, tag("version", VERSION)).text = convergence.__version__
    return iq_result(stanza, query)
