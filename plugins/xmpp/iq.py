"""IQ handlers by payload (RFC 6120 §8.2.3): each service's table that its sessions dispatch through.

A handler module exposes ``register_iq(router)``, which the service calls when it is built::

    def register_iq(router):
        router.register("{jabber:iq:roster}query", roster_iq, features=("jabber:iq:roster",))

    def roster_iq(service, session, iq):  # -> reply element, or None when it answered itself
        ...

``features`` are the service discovery (XEP-0030) features the handler provides (only while
``offered(service)`` is true, when given: registration is listed only when enabled); ``before_auth``
handlers (in-band registration, XEP-0077) are also reached before SASL. A handler raises
``stanzas.StanzaError`` to answer with an error. An IQ nobody handles gets ``service-unavailable``
(RFC 6120 §8.4). ``router.feature(...)`` declares a feature that has no IQ of its own
(``msgoffline``). No I/O here: handlers call the core.

``IqRouter.dispatch`` routes every IQ a session sends (RFC 6120 §8.2.3, §10.3.3; RFC 6121 §8.5):

    to a full JID       forwarded to that bound session; none: service-unavailable (§8.5.3.2.3)
    to absent/domain    the ``to_server`` handler of the payload
    to a bare account   its ``to_account`` handler; the sender's own bare JID also reaches
                        ``to_server`` handlers (the server answers on the account's behalf)
    to another domain   remote-server-not-found (no server-to-server yet)

A get/set needs exactly one payload child (else ``bad-request``); results and errors not addressed
to a session are dropped (answers to our keep-alive pings), unless the server ``expect``-ed that
answer (``router.expect(full_jid, id, func)``: the entity capabilities query, XEP-0115 §6.3).

A module may also declare what an account's bare JID offers in disco#info (``account_feature``,
``account_identity``: the PEP service, XEP-0163 §1) and observe events of the service with
``router.on(event, func)``; ``router.emit(event, *args)`` calls each observer in registration order.
The events: ``presence`` (service, session, stanza) — a broadcast presence (RFC 6121 §4.2) before it
is sent, which an observer may amend; ``directed`` (service, session, stanza) — the same for
directed presence (§4.6); ``closed`` (service, session) — a bound session ended;
``subscribed`` (service, account, sessions) — those sessions now see the account's presence (RFC
6121 §3.1.5); ``vcard`` (service, account, vCard element) — an account is storing its vCard (XEP-0054 §3.2; an
observer may refuse it with a ``StanzaError``); and the
ones the PEP modules emit themselves (``pep.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from convergence import Address, AddressError, RoutingError

from .stanzas import StanzaError, error_reply


@dataclass(frozen=True)
class Handler:
    func: Callable
    features: tuple[str, ...] = ()
    before_auth: bool = False
    to_server: bool = True    # answers IQs addressed to the server (to absent or the domain)
    to_account: bool = False  # answers IQs addressed to a bare account JID (vcard of a contact, …)
    offered: Callable | None = None  # offered(service): the features are listed only when true


class IqRouter:
    """The IQ handlers and extra features of one service (built with it, never shared)."""

    #: Answers awaited at once (``expect``): beyond this the oldest is forgotten.
    MAX_AWAITED = 10000

    def __init__(self):
        self._handlers: dict[str, Handler] = {}
        self._features: set[str] = set()
        self._account_features: set[str] = set()
        self._account_identities: list[tuple[str, str]] = []
        self._observers: dict[str, list[Callable]] = {}
        self._account_items: list[Callable] = []
        self._server_extras: list[Callable] = []
        self._awaited: dict[tuple[str, str], Callable] = {}
        self._server_items: list[tuple[str, str]] = []

    def register(self, payload: str, func: Callable, *, features=(), before_auth=False,
                 to_server=True, to_account=False, offered=None) -> None:
        """Answer IQs whose child is ``payload`` (``{ns}local``) with ``func``."""
        self._handlers[payload] = Handler(func, tuple(features), before_auth, to_server, to_account,
                                          offered)

    def feature(self, *names: str) -> None:
        """Declare features provided without an IQ handler (e.g. XEP-0160 ``msgoffline``)."""
        self._features.update(names)

    def account_feature(self, *names: str) -> None:
        """Features of every account's bare JID in disco#info (XEP-0030 §3.1)."""
        self._account_features.update(names)

    def account_identity(self, category: str, type: str) -> None:
        self._account_identities.append((category, type))

    def account_features(self) -> list[str]:
        return sorted(self._account_features)

    def account_identities(self) -> list[tuple[str, str]]:
        return list(self._account_identities)

    def account_items(self, func: Callable) -> None:
        """``func(service, session, account)`` gives disco#items of an account's bare JID: a list
        of (jid, node) (XEP-0030 §4; PEP nodes, XEP-0163 §7)."""
        self._account_items.append(func)

    def server_item(self, jid: str, name: str) -> None:
        """An item of the server's disco#items (XEP-0030 §4): a service such as the MUC domain."""
        self._server_items.append((jid, name))

    def server_items(self) -> list[tuple[str, str]]:
        return list(self._server_items)

    def items_of_account(self, service, session, account) -> list[tuple[str, str]]:
        return [item for func in self._account_items for item in func(service, session, account)]

    def server_info(self, func: Callable) -> None:
        """``func(service)`` gives what the server's disco#info adds beyond its features: a list of
        identities (``disco#info`` ``<identity/>`` elements) and XEP-0128 forms (``jabber:x:data``
        elements), e.g. the upload service's ``store/file`` and max-file-size (XEP-0363 §2)."""
        self._server_extras.append(func)

    def server_extras(self, service) -> list:
        return [element for func in self._server_extras for element in func(service)]

    def on(self, event: str, func: Callable) -> None:
        self._observers.setdefault(event, []).append(func)

    def emit(self, event: str, *args) -> None:
        for func in self._observers.get(event, ()):
            func(*args)

    def expect(self, jid: str, id: str, func: Callable) -> None:
        """Call ``func(iq)`` with the result or error ``jid`` sends to the server for IQ ``id``."""
        awaited = self._awaited
        awaited[(jid, id)] = func
        while len(awaited) > self.MAX_AWAITED:
            del awaited[next(iter(awaited))]

    def forget(self, jid: str) -> None:
        """Answers from ``jid`` are no longer awaited (its session ended)."""
        for key in [k for k in self._awaited if k[0] == jid]:
            del self._awaited[key]

    def handler(self, payload: str) -> Handler | None:
        return self._handlers.get(payload)

    def features(self, service) -> list[str]:
        """Every feature ``service`` offers, for disco#info (XEP-0030 §3.1)."""
        offered = (h.features for h in self._handlers.values()
                   if h.offered is None or h.offered(service))
        return sorted(self._features.union(*offered))

    @staticmethod
    def _to_other_domain(service, iq, request: bool) -> None:
        """RFC 6120 §10.4: a bound session's IQ for another domain (a request, or the answer to a
        remote entity's request) leaves over federation (``service.federation``); without it a
        request gets ``remote-server-not-found``, an answer is dropped."""
        to = Address.from_jid(iq.get("to"))
        try:
            if service.federation is None:
                raise RoutingError("remote-server-not-found", f"no route to {to.domain}")
            service.federation.send(to.domain, iq)
        except RoutingError as exc:
            if request:
                raise StanzaError(exc.condition, exc.text) from None

    def dispatch(self, service, session, iq) -> None:
        """Route or answer one IQ from ``session`` (``from`` already stamped once bound)."""
        kind = iq.get("type")
        request = kind in ("get", "set")
        try:
            if kind not in ("get", "set", "result", "error") or iq.get("id") is None:
                raise StanzaError("bad-request", "an IQ needs an id and a type of get, set, result or error")
            to = Address.from_jid(iq.get("to")) if iq.get("to") else None
        except (StanzaError, AddressError) as exc:
            error = exc if isinstance(exc, StanzaError) else StanzaError("jid-malformed", str(exc))
            if kind != "error":
                session.send(error_reply(iq, error))
            return
        try:
            sender = getattr(session, "address", None)
            if to is not None and to.local and sender is not None and \
                    (refused := service.blocking.refusal(sender, to)) is not None:
                if request:  # XEP-0191 §3.3: across a block; other IQ types are dropped
                    raise refused
                return
            muc = getattr(service, "muc", None)
            if to is not None and muc is not None and to.domain == muc.domain and \
                    getattr(session, "account", None):
                return muc.iq(session, iq)  # the MUC service (XEP-0045, muc_service.py)
            if to is not None and to.domain != service.domain and getattr(session, "account", None):
                return self._to_other_domain(service, iq, request)
            if to is not None and to.resource and to.local:
                peer = service.session(to)
                if peer is not None:
                    peer.send(iq)
                    return
            if not request:
                if to is None or (not to.local and to.domain == service.domain):
                    awaited = self._awaited.pop((iq.get("from") or "", iq.get("id")), None)
                    if awaited is not None:
                        awaited(iq)
                return
            if to is not None and to.domain != service.domain:
                raise StanzaError("remote-server-not-found", f"no route to {to.domain}")
            if len(iq) != 1:
                raise StanzaError("bad-request", "an IQ get or set carries exactly one payload (RFC 6120 §8.2.3)")
            handler = self._handlers.get(iq[0].tag)
            if to is None or not to.local:
                allowed = handler is not None and handler.to_server and not (to and to.resource)
            elif to.resource:
                allowed = False  # a full JID with no session behind it (RFC 6121 §8.5.3.2.3)
            else:
                allowed = handler is not None and (
                    handler.to_account or (handler.to_server and to == session.account))
            if not allowed:
                raise StanzaError("service-unavailable")
            reply = handler.func(service, session, iq)
        except StanzaError as exc:
            reply = error_reply(iq, exc)
        if reply is not None:
            session.send(reply)
