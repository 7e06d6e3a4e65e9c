"""SIP registrar (RFC 3261 §10.3): bindings of contacts to accounts, in memory and in the store.

Each REGISTER is authenticated with digest (401, realm = the domain) as the account named in To;
then, all or nothing: ``Contact: *`` with ``Expires: 0`` removes every binding, each other contact
is added, refreshed (``expires`` parameter, else Expires, else ``default_expires``; capped at
``max_expires``; ``423`` with Min-Expires below ``min_expires``) or removed (0). A binding with
the same Call-ID and a CSeq not above the stored one aborts the request (step 7: ``400``). The
``200`` lists every current binding with its remaining ``expires``.

Every change is written to the store before the ``200`` goes out (the Kamailio usrloc
``location`` shape with absolute expiry, :mod:`convergence.store.bindings`), so a binding the
client was told about survives a crash; each binding is also an endpoint in
``core.presence`` (``register``/``unregister`` fire ``on_register``) that the router delivers
messages to. A timer removes each binding when it expires; at start-up the stored bindings that are
still current come back with their remaining time.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from urllib.parse import unquote

from convergence import AddressError, Presence
from convergence.store import bindings
from convergence.store.accounts import NoSuchAccount
from convergence.store.bindings import Binding

from .message import NameAddr, ParseError, SipUri

log = logging.getLogger(__name__)

_KEPT = ("expires", "q")  # Contact parameters the registrar writes itself


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class BindingEndpoint:
    """One registered contact of an account: an endpoint the router hands messages to."""

    protocol = "sip"

    def __init__(self, messaging, address, uri: str, params: str, flow_key: str, q: float | None,
                 call_id: str, cseq: int, expires: float, user_agent: str | None):
        self.messaging, self.address, self.uri, self.params = messaging, address, uri, params
        self.flow_key, self.q, self.call_id, self.cseq = flow_key, q, call_id, cseq
        self.expires, self.user_agent = expires, user_agent  # expires: monotonic deadline
        self.timer_at: float | None = None  # when its expiry timer fires
        self.presence = Presence()

    @property
    def peer(self) -> str:
        """Where the phone registered from (``udp:host:port``…), for the hub's log lines."""
        return self.flow_key

    def deliver(self, message) -> None:
        """RFC 3428 MESSAGE to the contact, in a client transaction (does not wait for it)."""
        self.messaging.send(self, message)

    def __repr__(self) -> str:
        return f"BindingEndpoint({self.address}, {self.uri})"


def resource(uri: str) -> str:
    """The endpoint resource of a contact: stable across restarts, distinct per contact."""
    return "sip-" + hashlib.blake2s(uri.encode(), digest_size=5).hexdigest()


class Registrar:
    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.core, self.settings = dispatcher.core, dispatcher.settings
        self.clock = dispatcher.clock
        self.aors: dict[str, dict[str, BindingEndpoint]] = {}  # account → contact URI → binding
        self.by_uri: dict[str, BindingEndpoint] = {}  # contact URI → binding (in-dialog routing)
        self._queue: list[tuple] = []  # refreshes live but not stored yet: (name, rows, st)
        self._date = (0, "")  # (second, Date value): formatted once a second, not per 200
        self.account_of = lru_cache(maxsize=1024)(self._account_of)  # each MESSAGE's From

    # -- queries --
    def contacts(self, name: str) -> list[BindingEndpoint]:
        """The current bindings of an account, highest q first (§16.6 forking order)."""
        return sorted(self.aors.get(name, {}).values(), key=lambda ep: -(ep.q or 0.0))

    def binding_on(self, name: str, flow) -> BindingEndpoint | None:
        """The binding of ``name`` registered over ``flow``, if any (who sent a MESSAGE)."""
        key = flow.key
        return next((ep for ep in self.aors.get(name, {}).values() if ep.flow_key == key), None)

    def flow_for(self, endpoint: BindingEndpoint):
        """Where to reach a binding: over TCP/TLS, the connection it registered on while that
        is up (a phone behind NAT cannot accept connections; RFC 5626 §5.3 in spirit); else, and
        always over UDP, the contact URI's own host, port and transport (§16.5)."""
        transport = self.dispatcher.transport
        if not endpoint.flow_key.startswith("udp:"):
            flow = transport.flow_of(endpoint.flow_key)
            if flow is not None:
                return flow
        return target_flow(transport, endpoint.uri)

    # -- start-up and expiry --
    def restore(self) -> None:
        """Bring back the stored bindings still current (after a restart); drop the others."""
        now, mono = utcnow(), self.clock()
        bindings.pop_expired(self.core.db, now)  # they expired while the server was down
        for b in bindings.current(self.core.db, now):
            remaining = (b.expires_at - now).total_seconds()
            params = f";+sip.instance={b.instance}" if b.instance else ""
            endpoint = BindingEndpoint(self.dispatcher.messaging,
                                       self.core.address(b.account, resource(b.contact)),
                                       b.contact, params, b.received or "", b.q, b.call_id, b.cseq,
                                       mono + remaining, b.user_agent)
            self._add(b.account, endpoint, math.ceil(remaining))

    def _add(self, name: str, endpoint: BindingEndpoint, expires: int) -> None:
        self.aors.setdefault(name, {})[endpoint.uri] = endpoint
        self.by_uri[endpoint.uri] = endpoint
        self._schedule(name, endpoint)
        self.core.presence.register(endpoint, expires)

    def _schedule(self, name: str, endpoint: BindingEndpoint) -> None:
        """One pending timer per binding: a refresh only moves it when it comes earlier."""
        if endpoint.timer_at is None or endpoint.expires < endpoint.timer_at:
            endpoint.timer_at = endpoint.expires
            self.dispatcher.timers.call_at(endpoint.expires, self._expire, name, endpoint,
                                           endpoint.expires)

    def _drop(self, name: str, endpoint: BindingEndpoint) -> None:
        table = self.aors.get(name, {})
        if table.get(endpoint.uri) is endpoint:
            del table[endpoint.uri]
            if self.by_uri.get(endpoint.uri) is endpoint:
                del self.by_uri[endpoint.uri]
            if not table:
                del self.aors[name]
            self.core.presence.unregister(endpoint)

    def _expire(self, name: str, endpoint: BindingEndpoint, at: float) -> None:
        if endpoint.timer_at != at or self.aors.get(name, {}).get(endpoint.uri) is not endpoint:
            return  # superseded, or removed since
        endpoint.timer_at = None
        if endpoint.expires > self.clock():  # refreshed since
            return self._schedule(name, endpoint)
        bindings.remove(self.core.db, name, endpoint.uri)
        self._drop(name, endpoint)

    def forget_account(self, name: str) -> None:
        """The account was deleted (its rows went with it): its endpoints go."""
        for endpoint in list(self.aors.get(name, {}).values()):
            self._drop(name, endpoint)

    # -- REGISTER --
    def handle(self, st) -> None:
        dispatcher, request, settings = self.dispatcher, st.request, self.settings
        if dispatcher.unsupported(st, "Require"):  # §10.3 step 2
            return
        user = dispatcher.auth.authenticate(st, proxy=False)  # step 3
        if user is None:
            return
        name = self.account_of(request.to.uri)  # step 5
        if name is None:
            return st.respond(404, "Not a local address-of-record")
        if name != user:  # step 4
            return st.respond(403, "Not allowed to register this address-of-record")
        try:
            contacts, expires = request.contacts, request.expires
            changes = self._changes(name, contacts, expires, request)
        except ParseError as err:
            return st.respond(err.status, err.reason)
        except _Refused as refusal:
            return st.respond(*refusal.args)
        if changes and all(seconds and existing for _, seconds, existing in changes):
            return self._refresh(name, changes, st, request)  # the usual re-REGISTER
        self.flush()  # keep the store in order: refreshes queued before this go first
        before = set(self.aors.get(name, ()))
        try:
            self._apply(name, changes, st, request)
        except NoSuchAccount:
            return st.respond(404, "No such account")
        self._accept(st, name)
        if set(self.aors.get(name, ())) - before:  # a new binding: what waited for it (msilo)
            self.core.router.deliver_stored(self.core.address(name))

    def _accept(self, st, name: str) -> None:
        st.respond(200, headers=[("Contact", self._contact(ep)) for ep in self.contacts(name)]
                   + [("Date", self._date_value())])

    def _date_value(self) -> str:
        """The ``Date`` of a 200 (§10.3 step 8, §20.17: RFC 1123 form, GMT)."""
        second = int(time.time())
        if second != self._date[0]:
            self._date = (second, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second)))
        return self._date[1]

    def _refresh(self, name: str, changes: list, st, request) -> None:
        """Bindings that only move on: live at once, written with the others of this batch
        (one transaction) by ``flush``, which then sends the 200s — never before the write."""
        rows = [self._row(name, change, st, request) for change in changes]
        for change, row in zip(changes, rows):
            self._live(name, change, row)
        self._queue.append((name, rows, st))
        if len(self._queue) == 1:
            self.dispatcher.timers.call_at(self.clock(), self.flush)

    def flush(self) -> None:
        """Write the queued refreshes in one transaction, then answer them."""
        queue, self._queue = self._queue, []
        if not queue:
            return
        try:
            bindings.refresh_many(self.core.db, [row for _, rows, _ in queue for row in rows])
        except Exception:
            log.exception("SIP: storing %d binding refreshes failed", len(queue))
            for _, _, st in queue:
                st.respond(500, "Bindings could not be stored")
            return
        for name, _, st in queue:
            if name in self.aors:
                self._accept(st, name)
            else:  # the account was deleted meanwhile
                st.respond(404, "No such account")

    def _account_of(self, uri: str) -> str | None:
        """The local account an AOR names, or None (``account_of``: cached by URI, as the answer
        depends on nothing else that changes)."""
        try:
            parsed = SipUri.parse(uri)
        except ParseError:
            return None
        if parsed.user is None or parsed.host not in self.dispatcher.local_hosts:
            return None
        try:
            return self.core.address(unquote(parsed.user)).local
        except AddressError:
            return None

    def _changes(self, name: str, contacts: list[NameAddr], expires: int | None, request) -> list:
        """(contact, seconds, existing binding) per Contact; raises _Refused for the whole
        request (steps 6–7) before anything is changed."""
        settings, table = self.settings, self.aors.get(name, {})
        call_id, cseq = request.call_id, request.cseq.number
        if contacts and contacts[0].uri == "*":
            if expires != 0:
                raise _Refused(400, "Contact * needs Expires: 0")
            contacts = [NameAddr(uri) for uri in table]
            seconds = {uri: 0 for uri in table}
        else:
            seconds = {}
            for contact in contacts:
                value = contact.expires
                value = value if value is not None else expires
                value = settings["default_expires"] if value is None else value
                if 0 < value < settings["min_expires"]:
                    raise _Refused(423, "Interval Too Brief",
                                   [("Min-Expires", str(settings["min_expires"]))])
                seconds[contact.uri] = min(value, settings["max_expires"])
                contact.q  # a bad q is a 400 (ParseError)
        changes = []
        for contact in contacts:
            existing = table.get(contact.uri)
            if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                raise _Refused(400, "CSeq not above the binding's (out of order REGISTER)")
            changes.append((contact, seconds[contact.uri], existing))
        return changes

    def _apply(self, name: str, changes: list, st, request) -> None:
        """Store each change, then make it live (endpoint, timer, on_register)."""
        db = self.core.db
        for change in changes:
            contact, seconds, existing = change
            if seconds == 0:
                if existing is not None:
                    bindings.remove(db, name, contact.uri)
                    self._drop(name, existing)
                continue
            row = self._row(name, change, st, request)
            if existing is None or not bindings.refresh(db, row):
                bindings.save(db, row)
            self._live(name, change, row)

    def _row(self, name: str, change: tuple, st, request) -> Binding:
        contact, seconds, _ = change
        return Binding(name, contact.uri, utcnow() + timedelta(seconds=seconds), contact.q,
                       request.call_id, request.cseq.number, st.flow.key, None,
                       contact.params.get("+sip.instance"), request.headers.get("User-Agent"))

    def _live(self, name: str, change: tuple, row: Binding) -> None:
        """Make a binding (new or refreshed, stored as ``row``) live."""
        contact, seconds, existing = change
        params = "".join(f";{k}" if v is None else f";{k}={v}"
                         for k, v in contact.params.items() if k not in _KEPT)
        endpoint = existing or BindingEndpoint(
            self.dispatcher.messaging, self.core.address(name, resource(contact.uri)),
            contact.uri, params, row.received, row.q, row.call_id, row.cseq, 0.0, row.user_agent)
        endpoint.params, endpoint.flow_key, endpoint.q = params, row.received, row.q
        endpoint.call_id, endpoint.cseq, endpoint.user_agent = row.call_id, row.cseq, row.user_agent
        endpoint.expires = self.clock() + seconds
        self._add(name, endpoint, seconds)

    def _contact(self, endpoint: BindingEndpoint) -> str:
        remaining = max(0, math.ceil(endpoint.expires - self.clock()))
        q = "" if endpoint.q is None else f";q={endpoint.q:g}"
        return f"<{endpoint.uri}>{endpoint.params}{q};expires={remaining}"


class _Refused(Exception):
    """The REGISTER fails as a whole: args are (status, reason[, headers])."""


def target_flow(transport, uri: str):
    """A flow to the host, port and transport a SIP URI names (§19.1.1, no DNS SRV)."""
    try:
        parsed = SipUri.parse(uri)
    except ParseError:
        return None
    name = (parsed.params.get("transport") or ("tls" if parsed.scheme == "sips" else "udp"))
    host = parsed.host.strip("[]")
    return transport.flow(name.upper(), host, parsed.port)
