"""Entity capabilities (XEP-0115): what each available session supports, for PEP's ``+notify``.

A client's available presence carries ``<c xmlns='http://jabber.org/protocol/caps' hash node
ver/>``. A ``ver`` already verified gives the session its features at once; an unknown one makes
the server ask the session for ``disco#info`` on ``node#ver`` (§6.3), compute the verification
string of the answer (§5.1: identities, features and extended forms, each sorted, ``<``-separated),
hash it with the announced algorithm (``sha-1``, ``sha-256``, ``sha-512``) and compare with
``ver`` (§5.4). Only a verified answer is cached by ``ver`` — at most ``[xmpp] caps_cache_size``,
the least recently used forgotten first, each keeping only its ``+notify`` features (at most
``MAX_NOTIFY``); an answer that does not verify (or legacy caps without
``hash``) serves that session only. Duplicate identities, features or form types make an answer
invalid (§5.4 3.3–3.6). Once a session's features are known or change, the ``caps`` event fires
(``service.iq.emit("caps", service, session)``): PEP then sends it the last items it wants (XEP-0163
§6.1.2). No I/O here: the query goes out through the session.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import xml.etree.ElementTree as ET
from collections import OrderedDict
from types import MappingProxyType

from .discovery import DISCO_INFO
from .stanzas import tag

NS = "http://jabber.org/protocol/caps"
DATA = "jabber:x:data"
HASHES = MappingProxyType({"sha-1": hashlib.sha1, "sha-256": hashlib.sha256,
                           "sha-512": hashlib.sha512})
MAX_VER = 256  # characters of a ver, node or feature we are willing to keep
MAX_NOTIFY = 256  # +notify features kept per capability set
NOTIFY = "+notify"


class Caps:
    """The capabilities of one service's sessions and the verified ``ver`` cache (per core)."""

    def __init__(self, cache_size: int):
        self.cache_size = cache_size
        self.known: OrderedDict[tuple[str, str], frozenset] = OrderedDict()  # (hash, ver) -> features
        self.sessions: dict = {}  # full JID -> (hash, ver, features or None while asked)
        self.remote: OrderedDict = OrderedDict()  # the same for entities of other domains (s2s_pep)

    def features(self, address) -> frozenset:
        entry = self.sessions.get(address)
        return (entry[2] or frozenset()) if entry else frozenset()

    def notify(self, address) -> frozenset:
        """The nodes the session at ``address`` asked for with ``node+notify`` (XEP-0163 §4)."""
        return frozenset(f[:-len(NOTIFY)] for f in self.features(address) if f.endswith(NOTIFY))

    def cached(self, key) -> frozenset | None:
        found = self.known.get(key)
        if found is not None:
            self.known.move_to_end(key)
        return found

    def cache(self, key, features: frozenset) -> None:
        self.known[key] = features
        self.known.move_to_end(key)
        while len(self.known) > self.cache_size:
            self.known.popitem(last=False)


def register_iq(router) -> None:
    router.feature(NS)
    router.on("presence", seen)
    router.on("closed", gone)


def gone(service, session) -> None:
    service.caps.sessions.pop(session.address, None)
    service.iq.forget(session.address.jid)


def seen(service, session, element: ET.Element) -> None:
    """A broadcast presence of ``session``: learn its capabilities (§6.3)."""
    caps = service.caps
    if element.get("type") == "unavailable":
        caps.sessions.pop(session.address, None)
        return
    algo, ver, node = announced(element)
    if not ver:
        if caps.sessions.pop(session.address, None) is not None:
            service.iq.emit("caps", service, session)
        return
    current = caps.sessions.get(session.address)
    if current is not None and current[:2] == (algo, ver):
        return
    known = caps.cached((algo, ver)) if algo in HASHES else None
    if known is not None:
        caps.sessions[session.address] = (algo, ver, known)
        service.iq.emit("caps", service, session)
        return
    caps.sessions[session.address] = (algo, ver, None)
    _ask(service, session, algo, ver, node)


def _ask(service, session, algo: str, ver: str, node: str) -> None:
    """disco#info to the session for ``node#ver`` (§6.3); the answer comes to ``answered``."""
    iq_id, iq = query(service, session.address.jid, ver, node)

    def answered(reply: ET.Element) -> None:
        entry = service.caps.sessions.get(session.address)
        if entry is None or entry[:2] != (algo, ver) or service.session(session.address) is not session:
            return  # the session went away or announced other capabilities meanwhile
        service.caps.sessions[session.address] = (algo, ver, learned(service.caps, reply, algo, ver))
        service.iq.emit("caps", service, session)
    service.iq.expect(session.address.jid, iq_id, answered)
    session.send(iq)


def announced(element: ET.Element) -> tuple[str, str, str]:
    """(hash, ver, node) of a presence's ``<c/>`` (§4); ver is "" when there is none we keep."""
    c = element.find(tag("c", NS))
    ver, algo, node = (c.get("ver", ""), c.get("hash", ""), c.get("node", "")) if c is not None else ("", "", "")
    if len(ver) > MAX_VER or len(node) > MAX_VER:
        ver = ""
    return algo, ver, node


def query(service, to: str, ver: str, node: str) -> tuple[str, ET.Element]:
    """(id, the disco#info IQ from the server to ``to`` for ``node#ver``, §6.3)."""
    iq_id = "caps-" + secrets.token_hex(6)
    iq = ET.Element(tag("iq"), {"type": "get", "id": iq_id, "from": service.domain, "to": to})
    ET.SubElement(iq, tag("query", DISCO_INFO), node=f"{node}#{ver}" if node else ver)
    return iq_id, iq


def learned(caps: Caps, reply: ET.Element, algo: str, ver: str) -> frozenset:
    """The features of a disco#info answer (empty for an error or an invalid answer); cached by
    ``ver`` when the answer verifies (§5.4)."""
    query = reply.find(tag("query", DISCO_INFO))
    if reply.get("type") != "result" or query is None:
        return frozenset()
    features = _features(query)
    if features is None:
        return frozenset()
    if algo in HASHES and verification_hash(query, algo) == ver:
        caps.cache((algo, ver), features)
    return features


def _features(query: ET.Element) -> frozenset | None:
    """The features worth keeping: only ``+notify`` ones (all PEP reads), at most ``MAX_NOTIFY``
    of at most ``MAX_VER`` characters, so a cache entry stays small whatever a client sends."""
    names = [f.get("var") or "" for f in query.findall(tag("feature", DISCO_INFO))]
    if len(set(names)) != len(names):
        return None
    kept = sorted(n for n in names if n.endswith(NOTIFY) and len(n) <= MAX_VER)
    return frozenset(kept[:MAX_NOTIFY])


def verification_string(query: ET.Element) -> str | None:
    """§5.1 for a disco#info ``<query/>``; None when §5.4 calls the answer invalid."""
    identities = sorted((i.get("category", ""), i.get("type", ""),
                         i.get("{http://www.w3.org/XML/1998/namespace}lang", ""), i.get("name", ""))
                        for i in query.findall(tag("identity", DISCO_INFO)))
    features = sorted(f.get("var") or "" for f in query.findall(tag("feature", DISCO_INFO)))
    if len(set(identities)) != len(identities) or len(set(features)) != len(features):
        return None
    text = "".join("/".join(i) + "<" for i in identities) + "".join(f + "<" for f in features)
    forms = {}
    for x in query.findall(f"{{{DATA}}}x"):
        fields = {}
        form_type = None
        for field in x.findall(f"{{{DATA}}}field"):
            values = sorted(v.text or "" for v in field.findall(f"{{{DATA}}}value"))
            if field.get("var") == "FORM_TYPE":
                if field.get("type") not in (None, "hidden") or len(values) != 1:
                    break
                form_type = values[0]
            elif field.get("var") is not None:
                fields[field.get("var")] = values
        else:
            if form_type is None:
                continue  # §5.4 3.6: a form without FORM_TYPE is ignored
            if form_type in forms:
                return None  # §5.4 3.5: two forms of the same type
            forms[form_type] = fields
            continue
        return None
    for form_type in sorted(forms):
        text += form_type + "<"
        for var in sorted(forms[form_type]):
            text += var + "<" + "".join(v + "<" for v in forms[form_type][var])
    return text


def verification_hash(query: ET.Element, algo: str) -> str | None:
    text = verification_string(query)
    if text is None or algo not in HASHES:
        return None
    return base64.b64encode(HASHES[algo](text.encode()).digest()).decode()
