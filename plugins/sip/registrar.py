"""SIP registrar (RFC 3261 §10.3): bindings of contacts to accounts, in memory and in the store.

Each REGISTER is authenticated with digest (401, realm = the domain) as the account named in To;
then, all or nothing: ``Contact: *`` with ``Expires: 0`` removes every binding, each other contact
is added, refreshed (``expires`` parameter, else Expires, else ``default_expires``; capped at
``max_expires``; ``423`` with Min-Expires below ``min_expires``) or removed (0). A binding with
the same Call-ID and a CSeq not above the stored one aborts the request (step 7: ``400``). The
``200`` lists every current binding with its remaining ``expires``. In a cluster a removal reaches
the node that holds the binding (``sip.drop``; for ``*``, every node).

Every change is written to the store before the ``200`` goes out (the Kamailio usrloc
``location`` shape with absolute expiry, :mod:`.bindings`), so a binding the
client was told about survives a crash; each binding is also an endpoint in
``core.presence`` (``register``/``unregister`` fire ``on_register``) that the router delivers
messages to, and an entry of the :class:`~.location.Location` that messaging and the proxy read.
A timer removes each binding when it expires; at start-up the stored bindings that are still
current come back with their remaining time. One clock: its monotonic time for the timers, its
wall time for the expiry stored and the ``Date`` of a 200.
"""
from __future__ import annotations

import logging
import math
import time
from datetime import timedelta

from convergence.store.accounts import NoSuchAccount

from . import bindings
from .bindings import Binding
from .location import BindingEndpoint, resource
from .message import NameAddr, ParseError

#: the cast (core/cluster.py) telling a binding's owner that a REGISTER on another node removed it
#: (``contact`` ``*``: every binding of the account, to every node)
CAST_DROP = "sip.drop"

log = logging.getLogger(__name__)

_KEPT = ("expires", "q")  # Contact parameters the registrar writes itself


class Registrar:
    """REGISTER for one server. ``call_at(at, callback, *args)`` runs a callback at a monotonic
    time; ``send(endpoint, message)`` is what a binding's ``deliver`` does (messaging's)."""

    def __init__(self, core, settings: dict, clock, call_at, auth, location, send):
        self.core, self.settings, self.clock, self.call_at = core, settings, clock, call_at
        self.auth, self.location, self.send = auth, location, send
        self._queue: list[tuple] = []  # refreshes live but not stored yet: (name, rows, st)
        self._date = (0, "")  # (second, Date value): formatted once a second, not per 200

    # -- start-up and expiry --
    def restore(self) -> None:
        """Bring back the stored bindings still current (after a restart); drop the others."""
        now, mono = self.clock.utc(), self.clock.monotonic()
        bindings.pop_expired(self.core.db, now)  # they expired while the server was down
        for b in bindings.current(self.core.db, now):
            remaining = (b.expires_at - now).total_seconds()
            params = f";+sip.instance={b.instance}" if b.instance else ""
            endpoint = BindingEndpoint(self.send, self.core.address(b.account, resource(b.contact)),
                                       b.contact, params, b.received or "", b.q, b.call_id, b.cseq,
                                       mono + remaining, b.user_agent)
            self._add(b.account, endpoint, math.ceil(remaining))

    def _add(self, name: str, endpoint: BindingEndpoint, expires: int) -> None:
        self.location.add(name, endpoint)
        self._schedule(name, endpoint)
        self.core.presence.register(endpoint, expires)

    def _schedule(self, name: str, endpoint: BindingEndpoint) -> None:
        """One pending timer per binding: a refresh only moves it when it comes earlier."""
        if endpoint.timer_at is None or endpoint.expires < endpoint.timer_at:
            endpoint.timer_at = endpoint.expires
            self.call_at(endpoint.expires, self._expire, name, endpoint, endpoint.expires)

    def _drop(self, name: str, endpoint: BindingEndpoint) -> None:
        if self.location.remove(name, endpoint):
            self.core.presence.unregister(endpoint)

    def _expire(self, name: str, endpoint: BindingEndpoint, at: float) -> None:
        if endpoint.timer_at != at or not self.location.holds(name, endpoint):
            return  # superseded, or removed since
        endpoint.timer_at = None
        if endpoint.expires > self.clock.monotonic():  # refreshed since
            return self._schedule(name, endpoint)
        bindings.remove(self.core.db, name, endpoint.uri)
        self._drop(name, endpoint)

    def _owner(self, name: str, uri: str) -> str | None:
        """The other cluster node that owns the binding of ``name`` to ``uri`` (the phone's
        REGISTER reached this worker from another port than the one it registered from), or None."""
        endpoint = self.core.presence.endpoint(self.core.address(name, resource(uri)))
        if not getattr(endpoint, "remote", False):
            return None
        log.info("SIP: a REGISTER removes %s's binding to %s, which node %s owns: handed to it",
                 name, uri, endpoint.node)
        return endpoint.node

    def dropped_elsewhere(self, name: str, uri: str) -> None:
        """A REGISTER that reached another node removed this node's binding of ``name`` to
        ``uri``, or every binding of ``name`` for ``*`` (the ``sip.drop`` cast; that node deleted
        the rows)."""
        table = self.location.bindings(name)
        for endpoint in list(table.values()) if uri == "*" else [table.get(uri)]:
            if endpoint is not None:
                self._drop(name, endpoint)

    def _drop_everywhere(self, name: str) -> None:
        """``Contact: *`` (§10.3 step 6) removes every binding of the account, also those other
        cluster nodes hold (the directory's, and those each worker restored as its own at
        start-up, which no directory names): every row goes, and every other node is told
        (``sip.drop`` with ``*``)."""
        cluster = self.core.cluster
        if cluster is None:
            return
        bindings.remove(self.core.db, name)
        log.info("SIP: a REGISTER with Contact: * removes %s's bindings on every node", name)
        cluster.cast(cluster.nodes, CAST_DROP, {"account": name, "contact": "*"})

    def forget_account(self, name: str) -> None:
        """The account was deleted (its rows went with it): its endpoints go."""
        for endpoint in list(self.location.bindings(name).values()):
            self._drop(name, endpoint)

    # -- REGISTER --
    def handle(self, st) -> None:
        request, settings = st.request, self.settings
        if st.unsupported("Require"):  # §10.3 step 2
            return
        user = self.auth.authenticate(st, proxy=False)  # step 3
        if user is None:
            return
        name = self.location.account_of(request.to.uri)  # step 5
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
        before = set(self.location.bindings(name))
        try:
            self._apply(name, changes, st, request)
            if contacts and contacts[0].uri == "*":
                self._drop_everywhere(name)
        except NoSuchAccount:
            return st.respond(404, "No such account")
        self._accept(st, name)
        if set(self.location.bindings(name)) - before:  # a new binding: what waited for it (msilo)
            self.core.router.deliver_stored(self.core.address(name))

    def _accept(self, st, name: str) -> None:
        st.respond(200, headers=[("Contact", self._contact(ep))
                                 for ep in self.location.contacts(name)]
                   + [("Date", self._date_value())])

    def _date_value(self) -> str:
        """The ``Date`` of a 200 (§10.3 step 8, §20.17: RFC 1123 form, GMT)."""
        second = int(self.clock.wall())
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
            self.call_at(self.clock.monotonic(), self.flush)

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
            if self.location.bindings(name):
                self._accept(st, name)
            else:  # the account was deleted meanwhile
                st.respond(404, "No such account")

    def _changes(self, name: str, contacts: list[NameAddr], expires: int | None, request) -> list:
        """(contact, seconds, existing binding) per Contact; raises _Refused for the whole
        request (steps 6–7) before anything is changed."""
        settings, table = self.settings, self.location.bindings(name)
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
                elif (node := self._owner(name, contact.uri)) is not None:
                    bindings.remove(db, name, contact.uri)  # and its owner drops it
                    self.core.cluster.cast({node}, CAST_DROP, {"account": name, "contact": contact.uri})
                continue
            row = self._row(name, change, st, request)
            if existing is None or not bindings.refresh(db, row):
                bindings.save(db, row)
            self._live(name, change, row)

    def _row(self, name: str, change: tuple, st, request) -> Binding:
        contact, seconds, _ = change
        return Binding(name, contact.uri, self.clock.utc() + timedelta(seconds=seconds), contact.q,
                       request.call_id, request.cseq.number, st.flow.key, None,
                       contact.params.get("+sip.instance"), request.headers.get("User-Agent"))

    def _live(self, name: str, change: tuple, row: Binding) -> None:
        """Make a binding (new or refreshed, stored as ``row``) live."""
        contact, seconds, existing = change
        params = "".join(f";{k}" if v is None else f";{k}={v}"
                         for k, v in contact.params.items() if k not in _KEPT)
        endpoint = existing or BindingEndpoint(
            self.send, self.core.address(name, resource(contact.uri)),
            contact.uri, params, row.received, row.q, row.call_id, row.cseq, 0.0, row.user_agent)
        endpoint.params, endpoint.flow_key, endpoint.q = params, row.received, row.q
        endpoint.call_id, endpoint.cseq, endpoint.user_agent = row.call_id, row.cseq, row.user_agent
        endpoint.expires = self.clock.monotonic() + seconds
        self._add(name, endpoint, seconds)

    def _contact(self, endpoint: BindingEndpoint) -> str:
        remaining = max(0, math.ceil(endpoint.expires - self.clock.monotonic()))
        q = "" if endpoint.q is None else f";q={endpoint.q:g}"
        return f"<{endpoint.uri}>{endpoint.params}{q};expires={remaining}"


class _Refused(Exception):
    """The REGISTER fails as a whole: args are (status, reason[, headers])."""

