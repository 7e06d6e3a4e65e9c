"""SIMPLE presence: the ``presence`` event package (RFC 3856 over RFC 6665) and PUBLISH (RFC 3903).

Watching. A SUBSCRIBE to ``sip:bob@<domain>`` with ``Event: presence`` is checked in this order:
``Require`` (``420``); the event package (``489 Bad Event`` with ``Allow-Events: presence``); an
``Accept`` without PIDF (``406``); a From of another domain (``403`` without a challenge, as for
MESSAGE); digest (``407``) as the From account (``403`` for someone else's From); the watched
account must exist or be a service user (``404``, which only an authenticated user learns, as
with MESSAGE); ``Expires`` under ``presence_min_expires`` (``423`` with ``Min-Expires``); the limits
(``max_subscriptions_per_account`` for the watcher, ``max_subscriptions_per_address`` for the
source address: ``403 Too many subscriptions``); a watcher the watched account keeps its presence
from whatever the roster says (``contacts.screened``: it blocks the watcher or is blocked by it,
XEP-0191) gets ``403 Forbidden``, and an existing subscription ends with a NOTIFY
``terminated;reason=rejected`` when such a block is made (``screen_changed``, RFC 6665 §4.2.2).
Then the watcher is authorized as the XMPP side
would (:func:`convergence.contacts.sees`: the shared roster lets everyone watch everyone, else a
roster subscription ``to``/``both`` is needed; an account may watch itself): ``200`` and a NOTIFY
``active`` with the PIDF of the account's combined presence (:mod:`.pidf`), or ``202`` and a NOTIFY
``pending`` without a body, and the ``on_subscription_request`` hook asks the protocol plugins to
put the request to the watched user (RFC 8048 §4). A pending subscription becomes active (with a
NOTIFY) once the roster allows it: looked at when it is refreshed, when the watched account's
presence changes, and every ``pending_check`` (10) seconds while any is pending.

Each subscription is a dialog (RFC 6665 §4.1.2.2): our To tag, the watcher's Contact as remote
target and its Record-Route as route set; requests in it are matched by Call-ID and both tags
(``481`` otherwise) and must come with a higher CSeq (``500``, RFC 3261 §12.2.2). From the source
address that began the dialog they need no new challenge (the dialog identifiers prove them);
from another one they are challenged (``407``) and must be the watcher's (``403``). A refresh gets
``200`` and a NOTIFY with the current state; ``Expires: 0`` unsubscribes (``200``, then a NOTIFY ``terminated;reason=timeout``),
as does the expiry timer. A SUBSCRIBE that forks to us twice makes two dialogs (RFC 6665 §4.5.1);
an initial ``Expires: 0`` is a fetch: one NOTIFY ``terminated``. Every change of the account's
combined presence (the ``on_presence`` hook: XMPP ``<show/>``/``<status/>``, a phone's PUBLISH or
registration, an HTTP stream, a service user) sends a NOTIFY to each of its watchers. One NOTIFY
per dialog is in flight at a time (retransmitted over UDP by its client transaction); a change
meanwhile is sent, as the latest state, once it is answered. A NOTIFY answered ``481`` or any
other failure, or never answered (64*T1), ends the subscription without another NOTIFY.
Subscriptions live in memory only: at shutdown each watcher gets a NOTIFY
``terminated;reason=probation;retry-after=30`` (RFC 6665 §4.2.2) before the sockets close, so
phones subscribe again once the server is back.

Publishing. A PUBLISH (RFC 3903 §6) to the sender's own AOR, authenticated like a MESSAGE, with
``Event: presence`` and an ``application/pidf+xml`` body (at most ``max_publish_size`` bytes:
``413``; other types ``415`` with ``Accept``; bad PIDF ``400``) sets the presence of the binding the
phone registered over the same flow (``403`` when it has none); XMPP watchers see it as that
resource's ``<show/>``/``<status/>``. Each accepted PUBLISH gets a new ``SIP-ETag``; a refresh or
modification names the last one in ``SIP-If-Match`` (``412`` when unknown), ``Expires: 0`` removes
the publication, and so do its expiry and the binding's end: the binding is then plain available
again, as a phone that only registers always is.

Decisions only: flows come from the location service, timers from ``call_at``, requests go out
through the transaction layer.
"""
from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from urllib.parse import unquote

from convergence import AddressError, Presence, contacts
from convergence.store import accounts

from . import pidf
from .message import Headers, NameAddr, ParseError, Request, SipUri

log = logging.getLogger(__name__)

EVENT = "presence"
ALLOW_EVENTS = EVENT
DEFAULT_EXPIRES = 3600  # RFC 3856 §6.4
SHUTDOWN_RETRY = 30  # seconds a phone is asked to wait before subscribing again after a restart
PENDING_CHECK = 10.0  # seconds between looks at the roster for pending subscriptions


def event_package(value: str | None) -> tuple[str | None, str | None]:
    """The package of an Event header (RFC 6665 §8.2.1, lower-cased) and its ``id`` parameter."""
    if value is None:
        return None, None
    package, *params = value.split(";")
    event_id = None
    for param in params:
        name, _, param_value = param.partition("=")
        if name.strip().lower() == "id":
            event_id = param_value.strip()
    return package.strip().lower(), event_id


def accepts_pidf(request) -> bool:
    """Whether the Accept header (absent: PIDF, RFC 3856 §6.7) allows ``application/pidf+xml``."""
    values = request.headers.get_all("Accept")
    if not values:
        return True
    types = {v.split(";")[0].strip().lower() for value in values for v in value.split(",")}
    return bool(types & {pidf.CONTENT_TYPE, "application/*", "*/*"}) or types == {""}


class Subscription:
    """One watcher's dialog (RFC 6665 §4.1.2.2) on one account's presence."""

    __slots__ = ("watcher", "target", "key", "uri", "flow_key", "routes", "local", "remote",
                 "call_id", "cseq", "remote_cseq", "event", "contact", "expires", "timer_at",
                 "state", "source", "in_flight", "dirty", "ended")

    def __init__(self, watcher: str, target, key: tuple, request, flow, local: str,
                 contact: str, state: str, expires: float):
        self.watcher, self.target, self.key = watcher, target, key
        self.uri = request.contacts[0].uri  # the remote target (§12.1.1)
        self.flow_key, self.source = flow.key, flow.peer[0]
        self.routes = request.headers.get_all("Record-Route")  # UAS route set: as received
        self.local = local  # our From in NOTIFYs: the SUBSCRIBE's To with our tag
        self.remote = request.headers.get("From")
        self.call_id, self.cseq, self.remote_cseq = request.call_id, 0, request.cseq.number
        self.event, self.contact, self.state = request.headers.get("Event"), contact, state
        self.expires, self.timer_at = expires, None
        self.in_flight = self.dirty = self.ended = False

    def __repr__(self) -> str:
        return f"Subscription({self.watcher} → {self.target}, {self.state})"


class Publication:
    """A phone's published presence (RFC 3903): the binding it applies to, its entity tag."""

    __slots__ = ("account", "endpoint", "etag", "expires", "timer_at")

    def __init__(self, account: str, endpoint, etag: str, expires: float):
        self.account, self.endpoint, self.etag = account, endpoint, etag
        self.expires, self.timer_at = expires, None


class PresenceAgent:
    """SUBSCRIBE, NOTIFY and PUBLISH for one server: the presence agent of every local account
    (RFC 3856 §3). ``call_at(at, callback, *args)`` runs a callback at a monotonic time."""

    def __init__(self, core, settings: dict, clock, call_at, transactions, auth, location,
                 names):
        self.core, self.settings, self.now, self.call_at = core, settings, clock.monotonic, call_at
        self.transactions, self.auth, self.location, self.names = (transactions, auth, location,
                                                                   names)
        self.dialogs: dict[tuple, Subscription] = {}  # (Call-ID, their tag, our tag)
        self.watchers: dict[object, dict[tuple, Subscription]] = {}  # watched account → dialogs
        self.per_account: Counter[str] = Counter()
        self.per_source: Counter[str] = Counter()
        self.publications: dict[str, Publication] = {}  # entity tag → publication
        self.published: dict[object, Publication] = {}  # binding endpoint → its publication
        self._etags = itertools.count(1)
        self.known: set[str] = set()  # account names seen to exist
        self._written: tuple = (None, b"")  # ((target, presence), PIDF) last written
        self.pending: set[Subscription] = set()  # waiting for the roster to allow them
        self.pending_check = PENDING_CHECK
        tls = settings["tls_listen"]
        self._ports = {"UDP": names.port, "TCP": names.port, "TLS": tls[1] if tls else names.port}

    # -- SUBSCRIBE (RFC 6665 §4.2.1, RFC 3856 §6) --
    def subscribe(self, st) -> None:
        request = st.request
        if self._refused_event(st):
            return
        if request.to.tag is not None:
            return self._in_dialog(st)
        if not accepts_pidf(request):
            return st.respond(406, headers=[("Accept", pidf.CONTENT_TYPE)])
        watcher = self._authenticated(st)
        if watcher is None:
            return
        target = self._target(st)
        if target is None:
            return
        seconds = self._granted(st)
        if seconds is None:
            return
        try:
            contact = request.contacts
        except ParseError as err:
            return st.respond(err.status, err.reason)
        if len(contact) != 1 or contact[0].uri == "*":
            return st.respond(400, "A SUBSCRIBE needs one Contact")  # RFC 6665 §4.1.2
        source = st.flow.peer[0]
        if seconds and (self.per_account[watcher] >= self.settings["max_subscriptions_per_account"]
                        or self.per_source[source] >= self.settings["max_subscriptions_per_address"]):
            return st.respond(403, "Too many subscriptions")
        watcher_address = self.core.address(watcher)
        if contacts.screened(self.core, watcher_address, target):
            return st.respond(403, "Forbidden")  # a block list: see screen_changed
        allowed = target == watcher_address or contacts.sees(self.core, watcher_address, target)
        local = self.transactions.new_id()
        sub = Subscription(watcher, target, (request.call_id, request.from_.tag, local), request,
                           st.flow, f"{request.headers.get('To')};tag={local}",
                           self._our_contact(target, st.flow), "active" if allowed else "pending",
                           self.now() + seconds)
        st.respond(200 if allowed else 202, to_tag=local,
                   headers=[("Expires", str(seconds)), ("Contact", sub.contact),
                            ("Allow-Events", ALLOW_EVENTS)])
        if not seconds:  # a fetch (RFC 6665 §4.4.3): the state once, then it ends
            sub.ended = True
            return self._notify(sub, terminated="timeout")
        self._add(sub)
        self._notify(sub)
        if not allowed:
            if not self.pending:
                self.call_at(self.now() + self.pending_check, self._check_pending)
            self.pending.add(sub)
            self.core.hook.on_subscription_request(core=self.core, account=watcher_address,
                                                   contact=target)

    def _in_dialog(self, st) -> None:
        """A refresh or an unsubscribe in an existing dialog (RFC 6665 §4.2.1.2, §4.2.1.4)."""
        request = st.request
        sub = self.dialogs.get((request.call_id, request.from_.tag, request.to.tag))
        if sub is None:
            return st.respond(481)
        if st.flow.peer[0] != sub.source:  # elsewhere than the dialog began: prove who you are
            user = self._authenticated(st)  # (else knowing the Call-ID and tags would let
            if user is None:  # anyone turn the NOTIFYs to themselves)
                return
            if user != sub.watcher:
                return st.respond(403, "Not the watcher of this subscription")
        if request.cseq.number <= sub.remote_cseq:
            return st.respond(500, "CSeq not above the dialog's")  # RFC 3261 §12.2.2
        sub.remote_cseq = request.cseq.number
        seconds = self._granted(st)
        if seconds is None:
            return
        try:
            if request.contacts and request.contacts[0].uri != "*":
                sub.uri = request.contacts[0].uri  # a target refresh (§12.2.2)
        except ParseError as err:
            return st.respond(err.status, err.reason)
        sub.flow_key = st.flow.key
        st.respond(200, to_tag=sub.key[2], headers=[("Expires", str(seconds)),
                                                    ("Contact", sub.contact)])
        if not seconds:
            return self._end(sub, "timeout")
        sub.expires = self.now() + seconds
        self._schedule(sub)
        self._authorize(sub)
        self._notify(sub)

    @staticmethod
    def _refused_event(st) -> bool:
        """Answered already: an unsupported ``Require`` (420) or another event package than
        presence (489 with Allow-Events, RFC 6665 §8.2.2)."""
        if st.unsupported("Require"):
            return True
        package, _ = event_package(st.request.headers.get("Event"))
        if package != EVENT:
            st.respond(489, headers=[("Allow-Events", ALLOW_EVENTS)])
            return True
        return False

    def _granted(self, st) -> int | None:
        """The granted duration, or None once answered (400 for a bad Expires, 423)."""
        try:
            return self._expires(st.request)
        except ParseError as err:
            st.respond(err.status, err.reason)
        except _Refused as refusal:
            st.respond(*refusal.args)
        return None

    def _authenticated(self, st) -> str | None:
        """The watcher (or publisher): a local From, proved with digest (as MESSAGE does)."""
        request = st.request
        sender = self.location.account_of(request.from_.uri)
        if sender is None:
            st.respond(403, "From is not an address of this domain")
            return None
        user = self.auth.authenticate(st, proxy=True)
        if user is None:
            return None
        if user != sender:
            st.respond(403, "From is not the authenticated user")
            return None
        return user

    def _target(self, st):
        """The account (or service user) the Request-URI names, or None once answered 404."""
        core = self.core
        try:
            target = core.address(unquote(SipUri.parse(st.request.uri).user or ""))
        except (AddressError, ParseError):
            target = None
        if target is None or not self._exists(target):
            st.respond(404, "No such user")
            return None
        return target

    def _exists(self, target) -> bool:
        """An account or service user. Accounts seen to exist are remembered (until deleted:
        ``forget_account``), and one with live endpoints exists: the store is asked rarely."""
        core, name = self.core, target.local
        if name in self.known or core.presence.endpoints(target) \
                or target in contacts.service_users(core):
            return True
        if accounts.exists(core.db, name):
            self.known.add(name)
            return True
        return False

    def _expires(self, request) -> int:
        """The granted duration (RFC 6665 §4.2.1.1): ``Expires`` (default 3600, RFC 3856 §6.4),
        at most ``presence_max_expires``; ``_Refused`` 423 under ``presence_min_expires``."""
        value = request.expires
        value = DEFAULT_EXPIRES if value is None else value
        minimum = self.settings["presence_min_expires"]
        if 0 < value < minimum:
            raise _Refused(423, "Interval Too Brief", [("Min-Expires", str(minimum))])
        return min(value, self.settings["presence_max_expires"])

    def _our_contact(self, target, flow) -> str:
        transport = flow.transport
        return (f"<sip:{target.sip_uri.partition(':')[2].rpartition('@')[0]}@{self.names.host}:"
                f"{self._ports[transport]};transport={transport.lower()}>")

    # -- the subscription table --
    def _add(self, sub: Subscription) -> None:
        self.dialogs[sub.key] = sub
        self.watchers.setdefault(sub.target, {})[sub.key] = sub
        self.per_account[sub.watcher] += 1
        self.per_source[sub.source] += 1
        self._schedule(sub)

    def _remove(self, sub: Subscription) -> None:
        if sub.ended:
            return
        sub.ended = True
        self.pending.discard(sub)
        self.dialogs.pop(sub.key, None)
        table = self.watchers.get(sub.target, {})
        table.pop(sub.key, None)
        if not table:
            self.watchers.pop(sub.target, None)
        for counter, key in ((self.per_account, sub.watcher), (self.per_source, sub.source)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def _schedule(self, sub: Subscription) -> None:
        if sub.timer_at is None or sub.expires < sub.timer_at:
            sub.timer_at = sub.expires
            self.call_at(sub.expires, self._expire, sub, sub.expires)

    def _expire(self, sub: Subscription, at: float) -> None:
        if sub.ended or sub.timer_at != at:
            return
        sub.timer_at = None
        if sub.expires > self.now():  # refreshed since
            return self._schedule(sub)
        self._end(sub, "timeout")

    def _end(self, sub: Subscription, reason: str) -> None:
        """RFC 6665 §4.2.2: a last NOTIFY ``terminated``, and the subscription is gone."""
        self._remove(sub)
        self._notify(sub, terminated=reason)

    def _authorize(self, sub: Subscription) -> bool:
        """A pending subscription becomes active once the roster allows it (whether it did)."""
        if sub.state == "pending" and contacts.sees(self.core, self.core.address(sub.watcher),
                                                    sub.target):
            sub.state = "active"
            self.pending.discard(sub)
            return True
        return False

    def _check_pending(self) -> None:
        """Every ``pending_check`` seconds while any is pending: the roster may allow it now
        (the watched user approved over XMPP, which tells the core nothing)."""
        for sub in list(self.pending):
            if sub.ended:
                self.pending.discard(sub)
            elif self._authorize(sub):
                self._notify(sub)
        if self.pending:
            self.call_at(self.now() + self.pending_check, self._check_pending)

    # -- NOTIFY (RFC 6665 §4.2.2, RFC 3856 §6.6–6.8) --
    def on_presence(self, account) -> None:
        """``account``'s combined presence changed: each of its watchers gets a NOTIFY (a
        watcher screened from it meanwhile its last one, ``screen_changed``)."""
        for sub in list(self.watchers.get(account, {}).values()):
            if self._screened(sub):
                self._end(sub, "rejected")
                continue
            self._authorize(sub)
            self._notify(sub)

    def screen_changed(self, account) -> None:
        """A block list of ``account`` changed (the ``on_screen_changed`` hook): a watcher of it,
        or a subscription of its own, that may no longer see the presence ends with a NOTIFY
        ``terminated;reason=rejected`` and no body. RFC 6665 §4.2.2 names ``rejected`` for a
        subscription ended by a change of authorization policy and says the subscriber SHOULD
        NOT subscribe again (§4.1.3), so a phone does not loop; a new SUBSCRIBE from it is then
        answered ``403`` (§4.2.1.1: the notifier that knows at once that the subscriber is not
        authorized SHOULD answer 403), as its MESSAGEs are (XEP-0191 §3.3 for SIP senders). The
        blocked phone thus learns it is refused, as it does from its MESSAGEs; the privacy of
        §6.2 (a fake ``pending``) would not hide more. Unblocking does not bring an ended
        subscription back: the phone subscribes again (at its next start or registration)."""
        local = account.local
        for sub in list(self.dialogs.values()):
            if (sub.target == account or sub.watcher == local) and self._screened(sub):
                self._end(sub, "rejected")

    def _screened(self, sub: Subscription) -> bool:
        return contacts.screened(self.core, self.core.address(sub.watcher), sub.target)

    def _notify(self, sub: Subscription, terminated: str | None = None) -> None:
        if sub.in_flight and terminated is None:
            sub.dirty = True  # sent with the latest state once the one in flight is answered
            return
        flow = self._flow(sub)
        if flow is None:
            log.info("SIP: no way to reach %s's watcher %s", sub.target, sub.uri)
            return self._remove(sub)
        presence = self.core.presence.presence(sub.target)
        if terminated is not None:
            state = f"terminated;reason={terminated}"
        else:
            state = f"{sub.state};expires={max(0, math.ceil(sub.expires - self.now()))}"
        sub.cseq += 1
        headers = Headers([("Max-Forwards", "70")])
        for route in sub.routes:
            headers.add("Route", route)
        headers.add("From", sub.local)
        headers.add("To", sub.remote)
        headers.add("Call-ID", sub.call_id)
        headers.add("CSeq", f"{sub.cseq} NOTIFY")
        headers.add("Contact", sub.contact)
        headers.add("Event", sub.event)
        headers.add("Subscription-State", state)
        body = b""
        if sub.state == "active" and (terminated is None or terminated == "timeout"):
            headers.add("Content-Type", pidf.CONTENT_TYPE)
            body = self._document_of(sub.target, presence)
        request = Request("NOTIFY", sub.uri, headers, body)
        sub.in_flight = terminated is None
        self.transactions.send_request(request, flow,
                                       lambda response: self._answered(sub, response))

    def _document_of(self, target, presence: Presence) -> bytes:
        """The PIDF for ``target`` in ``presence``, written once per change for all its
        watchers (the last one is kept). Its tuple and person ids stay the same from one
        document to the next, as RFC 3863 §4.1.4 asks of one tuple."""
        if self._written[0] != (target, presence):
            self._written = ((target, presence), pidf.build(target.sip_uri, presence, "t1", "p1"))
        return self._written[1]

    def _flow(self, sub: Subscription):
        """Where NOTIFYs go: back where the SUBSCRIBE came from (its UDP source address, what
        RFC 3581 does for responses and what a phone behind NAT needs; its TCP/TLS connection while
        up), else the first route or the remote target (RFC 3261 §12.2.1.1, loose routing)."""
        flow = self.location.flows.flow_of(sub.flow_key)
        if flow is not None:
            return flow
        target = NameAddr.parse(sub.routes[0]).uri if sub.routes else sub.uri
        return self.location.target_flow(target)

    def _answered(self, sub: Subscription, response) -> None:
        if response.status < 200 or sub.ended:
            return
        sub.in_flight = False
        if response.status >= 300:  # 481, a timeout (408), any failure: it is over
            log.info("SIP: NOTIFY to %s's watcher %s failed: %d %s; subscription removed",
                     sub.target, sub.uri, response.status, response.reason)
            return self._remove(sub)
        if sub.dirty:
            sub.dirty = False
            self._notify(sub)

    def forget_account(self, account) -> None:
        """A deleted account watches nothing and is watched by no one (RFC 6665 §4.2.2)."""
        self.known.discard(account.local)
        for sub in list(self.dialogs.values()):
            if sub.target == account:
                self._end(sub, "noresource")
            elif sub.watcher == account.local:
                self._end(sub, "rejected")

    def shutdown(self) -> None:
        """Every watcher is told to come back later (the subscriptions are not stored)."""
        for sub in list(self.dialogs.values()):
            self._end(sub, f"probation;retry-after={SHUTDOWN_RETRY}")

    # -- PUBLISH (RFC 3903 §6) --
    def publish(self, st) -> None:
        request = st.request
        if self._refused_event(st):
            return
        user = self._authenticated(st)
        if user is None:
            return
        if self.location.account_of(request.uri) != user:
            return st.respond(403, "Only your own presence can be published")
        seconds = self._granted(st)
        if seconds is None:
            return
        etag = request.headers.get("SIP-If-Match")
        old = None
        if etag is not None:
            old = self.publications.get(etag.strip())
            if old is None or old.account != user:
                return st.respond(412, "Conditional Request Failed")
        if etag is None and not request.body:
            return st.respond(400, "An initial PUBLISH needs a PIDF body")  # §6 step 4
        presence = None
        if request.body:  # an initial PUBLISH or a modification carries a body
            try:
                presence = self._document(request)
            except _Refused as refusal:
                return st.respond(*refusal.args)
        if not seconds:
            if old is not None:
                self._unpublish(old)
            return st.respond(200, headers=[("SIP-ETag", etag.strip() if etag else
                                             self._new_etag()), ("Expires", "0")])
        endpoint = old.endpoint if old is not None else self.location.binding_on(user, st.flow)
        if endpoint is None or not self.location.holds(user, endpoint):
            return st.respond(403, "PUBLISH needs a registration from this phone")
        current = self.published.get(endpoint)
        if current is not None and current is not old:
            self._forget(current)  # a new initial PUBLISH replaces what the phone published
        if old is not None:
            self._forget(old)
        publication = Publication(user, endpoint, self._new_etag(), self.now() + seconds)
        self.publications[publication.etag] = publication
        self.published[endpoint] = publication
        self._schedule_publication(publication)
        st.respond(200, headers=[("SIP-ETag", publication.etag), ("Expires", str(seconds))])
        if presence is not None:
            self._set(endpoint, presence)

    def _document(self, request) -> Presence:
        media = (request.content_type or "").split(";")[0].strip().lower()
        if media != pidf.CONTENT_TYPE:
            raise _Refused(415, "Unsupported Media Type", [("Accept", pidf.CONTENT_TYPE)])
        if len(request.body) > self.settings["max_publish_size"]:
            raise _Refused(413, "PIDF document too large")
        try:
            return pidf.parse(request.body)
        except pidf.PidfError as err:
            raise _Refused(400, f"Bad PIDF: {str(err)[:120]}") from None

    def _new_etag(self) -> str:
        return f"{self.transactions.new_id()}.{next(self._etags)}"

    def _schedule_publication(self, publication: Publication) -> None:
        publication.timer_at = publication.expires
        self.call_at(publication.expires, self._publication_expired, publication,
                     publication.expires)

    def _publication_expired(self, publication: Publication, at: float) -> None:
        if publication.timer_at == at and self.publications.get(publication.etag) is publication:
            self._unpublish(publication)

    def _forget(self, publication: Publication) -> None:
        self.publications.pop(publication.etag, None)
        if self.published.get(publication.endpoint) is publication:
            del self.published[publication.endpoint]

    def _unpublish(self, publication: Publication) -> None:
        """The publication ended: the binding is plain available again (RFC 3903 §6 step 4)."""
        self._forget(publication)
        if self.location.holds(publication.account, publication.endpoint):
            self._set(publication.endpoint, Presence())

    def _set(self, endpoint, presence: Presence) -> None:
        """The binding's presence is what the phone published; XMPP watchers see the resource
        change (a refresh of the registration fires ``on_register``, which they follow)."""
        was = endpoint.presence
        if was == presence:
            return
        endpoint.presence = presence
        remaining = math.ceil(endpoint.expires - self.now())
        if remaining > 0:
            self.core.presence.register(endpoint, remaining)
        if presence.available and not was.available:  # messages waited while it was closed
            self.core.router.deliver_stored(endpoint.address.bare)

    def binding_gone(self, endpoint) -> None:
        """A binding was removed or expired: its publication goes with it."""
        publication = self.published.get(endpoint)
        if publication is not None and publication.endpoint is endpoint:
            self._forget(publication)


class _Refused(Exception):
    """The request fails: args are (status, reason[, headers])."""
