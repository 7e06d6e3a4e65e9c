"""Message Archive Management (XEP-0313 ``urn:xmpp:mam:2`` and ``#extended``): queries,
preferences and metadata of an account's 1:1 archive (``archive.py`` writes it).

A query (§4) is an IQ set to one's own bare JID (or with no ``to``); another account's archive is
``forbidden``, a pubsub ``node`` ``item-not-found``. Its data form (XEP-0004, FORM_TYPE
``urn:xmpp:mam:2``) filters by ``with`` (a bare JID: every resource; a full JID: only it),
``start``/``end`` (XEP-0082 date-times, inclusive) and, #extended, ``ids``, ``before-id``,
``after-id`` (exclusive). An unknown field, a second value of a single field, a malformed JID or
date, more than ``MAX_IDS`` ids or a form of another type is ``bad-request``. Paging is RSM
(XEP-0059, ``rsm.py``): ``max`` (default and cap ``[xmpp] mam_max_page``: larger values are cut),
``after``/``before`` an archive id (unknown: ``item-not-found``, §4.2.1), empty ``before`` (the
last page), ``index``; ``<flip-page/>`` (§4.1.3) sends the page newest first. Each result is a
``<message><result queryid id><forwarded><delay/><message/></forwarded></result></message>``
(§4.2) from the account's bare JID, then the IQ result carries ``<fin complete>`` with the page's
``<set/>`` (§4.3). An IQ get of ``<query/>`` returns the form's fields (§5.1.1).

Preferences (§7): ``<prefs default='always|never|roster'>`` with ``<always/>``/``<never/>`` lists
of bare JIDs; get and set. Metadata (§6): the first and the last message's id and stamp.
Disco (§8): the account's bare JID and, as the server answers for the sender's own JID, the
server's feature list carry ``urn:xmpp:mam:2`` (and ``#extended``) and ``urn:xmpp:sid:0``.
Parsing here is sans-IO; the handlers call the store. ``parse_query`` and ``send_page`` also
answer queries to rooms' archives (``muc_mam.py``).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

from convergence import Address, AddressError
from convergence.message import new_id

from . import archive_store as store, rsm
from .stanza_ids import SID
from .messages import DELAY_NS, FORWARD_NS, MESSAGE
from .stanzas import StanzaError, iq_result, tag

MAM = "urn:xmpp:mam:2"
EXTENDED = MAM + "#extended"
DATA = "jabber:x:data"
QUERY, PREFS, METADATA = tag("query", MAM), tag("prefs", MAM), tag("metadata", MAM)
X, FIELD, VALUE = tag("x", DATA), tag("field", DATA), tag("value", DATA)
FEATURES = (MAM, EXTENDED, SID)
MAX_IDS = 1000  #: ids one query may name (#extended ``ids``)
MAX_PREFS_JIDS = 1000  #: JIDs in one preferences list
#: field -> type of the query form (§5.1.1); ``ids`` takes several values
FORM_FIELDS = MappingProxyType({"with": "jid-single", "start": "text-single", "end": "text-single",
                                "before-id": "text-single", "after-id": "text-single",
                                "ids": "text-multi"})

_DATETIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
                       r"(Z|[+-]\d{2}:\d{2})\Z")


# ---- sans-IO parsing -----------------------------------------------------------------------------
def parse_datetime(text: str) -> datetime:
    """A XEP-0082 §3.2 DateTime (``CCYY-MM-DDThh:mm:ss[.sss]TZD``) as a naive UTC datetime;
    ValueError if it is anything else."""
    found = _DATETIME.match(text.strip()) if len(text) <= 64 else None
    if found is None:
        raise ValueError(f"{text[:64]!r} is not a XEP-0082 date-time")
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"{zone!r} is not a time zone offset")
        offset = timedelta(hours=hours, minutes=minutes) * (1 if zone[0] == "+" else -1)
    when = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro,
                    tzinfo=timezone(offset))
    return when.astimezone(timezone.utc).replace(tzinfo=None)


def format_datetime(when: datetime) -> str:
    """A naive UTC datetime as a XEP-0082 DateTime with microseconds."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_form(x: ET.Element | None) -> store.Filter:
    """The filters of a submitted query form (§4.1.1); StanzaError ``bad-request`` if malformed."""
    where = store.Filter()
    if x is None:
        return where
    if x.get("type") not in ("submit", None):
        raise StanzaError("bad-request", "the query form must be of type submit")
    seen = set()
    for field in x.findall(FIELD):
        name = field.get("var")
        values = [v.text or "" for v in field.findall(VALUE)]
        if name in seen:
            raise StanzaError("bad-request", f"field {name!r} is given twice")
        seen.add(name)
        if name == "FORM_TYPE":
            if values != [MAM]:
                raise StanzaError("bad-request", f"FORM_TYPE must be {MAM}")
            continue
        if name not in FORM_FIELDS:
            raise StanzaError("bad-request", f"unknown field {name!r}")
        if name == "ids":
            if len(values) > MAX_IDS:
                raise StanzaError("bad-request", f"at most {MAX_IDS} ids per query")
            where.ids = [v.strip() for v in values]
            continue
        if len(values) != 1 or not values[0].strip():
            raise StanzaError("bad-request", f"field {name!r} needs exactly one value")
        value = values[0].strip()
        try:
            if name == "with":
                where.with_jid = Address.from_jid(value).jid
            elif name in ("start", "end"):
                setattr(where, name, parse_datetime(value))
            else:
                setattr(where, name.replace("-", "_"), value)
        except (AddressError, ValueError) as exc:
            raise StanzaError("bad-request", f"field {name!r}: {exc}") from None
    return where


def query_form() -> ET.Element:
    """The query form's fields (§5.1.1), for an IQ get of <query/>."""
    x = ET.Element(X, type="form")
    form_type = ET.SubElement(x, FIELD, var="FORM_TYPE", type="hidden")
    ET.SubElement(form_type, VALUE).text = MAM
    for name, kind in FORM_FIELDS.items():
        ET.SubElement(x, FIELD, var=name, type=kind)
    return x


def parse_prefs(element: ET.Element) -> store.Prefs:
    """A <prefs/> set (§7.2); StanzaError ``bad-request`` for a bad default or JID."""
    default = element.get("default")
    if default not in ("always", "never", "roster"):
        raise StanzaError("bad-request", "default must be always, never or roster")
    lists = []
    for name in ("always", "never"):
        jids = []
        holder = element.find(tag(name, MAM))
        for item in holder.findall(tag("jid", MAM)) if holder is not None else ():
            try:
                jids.append(Address.from_jid((item.text or "").strip()).bare.jid)
            except AddressError as exc:
                raise StanzaError("bad-request", f"<{name}/>: {exc}") from None
        if len(jids) > MAX_PREFS_JIDS:
            raise StanzaError("bad-request", f"at most {MAX_PREFS_JIDS} JIDs per list")
        lists.append(tuple(dict.fromkeys(jids)))
    return store.Prefs(default, *lists)


def prefs_element(prefs: store.Prefs) -> ET.Element:
    element = ET.Element(PREFS, default=prefs.default)
    for name, jids in (("always", prefs.always), ("never", prefs.never)):
        holder = ET.SubElement(element, tag(name, MAM))
        for jid in jids:
            ET.SubElement(holder, tag("jid", MAM)).text = jid
    return element


def result_message(to: str, owner: str, queryid: str | None, stanza_id: str, created_at: datetime,
                   stanza: ET.Element) -> ET.Element:
    """One result (§4.2): the archived message forwarded (XEP-0297) with its delay stamp."""
    message = ET.Element(MESSAGE, {"to": to, "from": owner, "id": new_id()})
    result = ET.SubElement(message, tag("result", MAM), {"id": stanza_id})
    if queryid is not None:
        result.set("queryid", queryid)
    forwarded = ET.SubElement(result, tag("forwarded", FORWARD_NS))
    ET.SubElement(forwarded, tag("delay", DELAY_NS), stamp=format_datetime(created_at))
    forwarded.append(stanza)
    return message


def parse_query(query: ET.Element, limit: int) -> tuple[store.Filter, rsm.Page]:
    """The filters and the page a <query/> set asks for (§4.1, XEP-0059), at most ``limit`` a
    page; StanzaError ``bad-request`` if malformed. Shared by rooms' archives (``muc_mam.py``)."""
    where = parse_form(query.find(X))
    try:
        return where, rsm.parse(query, limit, limit)
    except rsm.RsmError as exc:
        raise StanzaError("bad-request", str(exc)) from None


def send_page(session, iq: ET.Element, owner: str, results: list, count: int, first: int,
              complete: bool) -> ET.Element:
    """Send ``results`` — ``(stanza id, time, <message/>)`` in archive order — to ``session`` as
    results of the <query/> of ``iq`` from ``owner`` (§4.2), and return the IQ result with
    ``<fin/>`` and the page's <set/> (§4.3)."""
    query = iq[0]
    queryid = query.get("queryid")
    ordered = reversed(results) if query.find(tag("flip-page", MAM)) is not None else results
    for stanza_id, created_at, stanza in ordered:
        session.send(result_message(session.address.jid, owner, queryid, stanza_id, created_at, stanza))
    fin = ET.Element(tag("fin", MAM))
    if complete:
        fin.set("complete", "true")
    fin.append(rsm.render(results[0][0] if results else None, results[-1][0] if results else None,
                          first if results else None, count))
    return iq_result(iq, fin)


# ---- IQ handlers -------------------------------------------------------------------------------
def _own_archive(session, stanza) -> Address:
    """The account whose archive the IQ is about: only one's own (§4: else forbidden)."""
    to = stanza.get("to")
    if to and Address.from_jid(to).bare != session.account:
        raise StanzaError("forbidden", "only your own archive can be read")
    return session.account


def _archiving(service) -> None:
    if not service.archive.enabled:
        raise StanzaError("service-unavailable", "the message archive is off")


def query_iq(service, session, stanza):
    _archiving(service)
    account = _own_archive(session, stanza)
    query = stanza[0]
    if stanza.get("type") == "get":
        return iq_result(stanza, _form_reply(query))
    if query.get("node"):
        raise StanzaError("item-not-found", "no pubsub archives here")
    where, page = parse_query(query, service.settings["mam_max_page"])
    service.archive.flush()  # what was accepted before the query is in it
    try:
        entries, count, first, complete = store.query(
            service.core.db, account.local, where, page.max, page.after, page.before, page.index)
    except store.UnknownId as exc:
        raise StanzaError("item-not-found", f"no message {exc} in the archive") from None
    results = [(e.stanza_id, e.created_at, ET.fromstring(e.stanza)) for e in entries]
    return send_page(session, stanza, account.jid, results, count, first, complete)


def _form_reply(query: ET.Element) -> ET.Element:
    reply = ET.Element(QUERY)
    reply.append(query_form())
    return reply


def prefs_iq(service, session, stanza):
    _archiving(service)
    account = _own_archive(session, stanza)
    db = service.core.db
    if stanza.get("type") == "set":
        prefs = parse_prefs(stanza[0])
        store.set_prefs(db, account.local, prefs)
    else:
        prefs = store.get_prefs(db, account.local)
    return iq_result(stanza, prefs_element(prefs))


def metadata_iq(service, session, stanza):
    _archiving(service)
    account = _own_archive(session, stanza)
    if stanza.get("type") != "get":
        raise StanzaError("bad-request", "metadata is read with an IQ get")
    service.archive.flush()
    element = ET.Element(METADATA)
    for name, entry in zip(("start", "end"), store.bounds(service.core.db, account.local)):
        if entry is not None:
            ET.SubElement(element, tag(name, MAM), id=entry.stanza_id,
                          timestamp=format_datetime(entry.created_at))
    return iq_result(stanza, element)


def _enabled(service) -> bool:
    return service.archive.enabled


def register_iq(router) -> None:
    """The archive's IQs, for one's own bare JID (``to_account``: another's is forbidden)."""
    router.register(QUERY, query_iq, features=FEATURES, to_account=True, offered=_enabled)
    router.register(PREFS, prefs_iq, to_account=True)
    router.register(METADATA, metadata_iq, to_account=True)
    router.account_feature(*FEATURES)
