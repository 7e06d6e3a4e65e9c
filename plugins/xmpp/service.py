"""The c2s service: one per core, the tables every XMPP session and handler of that core shares.

``sessions(account)`` / ``session(full)`` / ``all_sessions()`` are the bound sessions (RFC 6120 §7),
by account and resource; ``connected``/``disconnected`` track every open stream, bound or not, so
that ``shutdown`` can end each with a ``system-shutdown`` stream error (§4.9.3.20). Failed logins
count per source address in ``limiter``. ``iq`` is this service's IQ router (RFC 6120 §8.2.3),
filled when the service is built by the ``register_iq`` of each module in ``IQ_PROVIDERS``.
Presence remembers here the last available stanza of each session (``last_presence``, for
probes, RFC 6121 §4.3.2) and the non-XMPP presence last shown of each account (``shown``). No I/O
here: the transport owns the sockets, the TLS context is handed in.
"""
from __future__ import annotations

import os
import time

import xml.etree.ElementTree as ET

from convergence import Address, Presence
from convergence.ratelimit import FailureLimiter
from convergence.store import accounts

from . import (avatar, blocking, bookmarks, c2s, caps, discovery, mam, messages, pep,
               private_storage, registration, roster, stream_management, upload, vcard)
from .archive import Archive
from .iq import IqRouter

#: The modules whose ``register_iq(router)`` fills a service's IQ router (in this order: caps
#: learns a session's features before PEP sends it the last items).
IQ_PROVIDERS = (c2s, discovery, messages, registration, roster, vcard, caps, pep, avatar,
                private_storage, bookmarks, upload, blocking, mam, stream_management)


class C2SService:
    def __init__(self, core, settings: dict, tls_context=None):
        self.core = core
        self.settings = settings  # the parsed [xmpp] table
        self.domain: str = core.domain
        self.tls_context = tls_context  # an ssl.SSLContext once listeners exist; None: no STARTTLS
        self.federation = None  # s2s_transport.Federation when [xmpp] s2s_listen is set (XmppServer)
        self.muc = None  # muc_service.MucService when [xmpp] muc_domain is set (XmppServer)
        self.components = None  # component.Components when [xmpp] component_listen is set (XmppServer)
        self.limiter = FailureLimiter(settings["login_failures"], settings["login_failure_window"],
                                      what="XMPP login")
        self.secret = os.urandom(32)  # SCRAM salts simulated for unknown users (RFC 5802 §5.1)
        self.now = time.monotonic
        self._bound: dict[Address, dict[str, object]] = {}
        self._open: set = set()
        self.iq = IqRouter()
        self.caps = caps.Caps(settings["caps_cache_size"])  # XEP-0115, for PEP's +notify
        self.blocking = blocking.BlockLists(self, settings["blocklist_max_items"])  # XEP-0191
        for module in IQ_PROVIDERS:
            module.register_iq(self.iq)
        self.last_presence: dict[Address, tuple[object, ET.Element]] = {}  # full JID -> (session, stanza)
        self.shown: dict[Address, dict[Address, Presence]] = {}  # account -> {JID: presence shown}
        self.slow_readers = 0  # connections closed because their outbound queue was full (metrics)
        self.archive = Archive(self)  # XEP-0313: the message archive's writer (archive.py)
        #: XEP-0198 §5: resumable sessions by id, hibernated or connected (stream_management.py)
        self.resumptions = stream_management.Resumptions()
        #: XEP-0198 §5 across cluster nodes: resuming a session another node holds, giving one
        #: up (sm_cluster.SessionMoves, set by the XmppServer); None: this process only
        self.moves = None
        #: ``later(seconds, fn) -> cancel()``: runs ``fn`` after ``seconds`` (the hibernation
        #: timers); the transport's ``transport.later``, set by the XmppServer
        self.later = None

    def link_for(self, domain: str):
        """Where stanzas for another ``domain`` go (``send(domain, element)``): the connected
        component serving it (XEP-0114), else the federation (None when it is off)."""
        if self.components is not None and self.components.serves(domain):
            return self.components
        return self.federation

    def credentials(self, username: str):
        """The stored SCRAM keys of ``username`` (SASL lookups), or None."""
        return accounts.credentials(self.core.db, username)

    # ---- every open stream ----
    def connected(self, session) -> None:
        self._open.add(session)

    def disconnected(self, session) -> None:
        self._open.discard(session)

    def open_streams(self) -> int:
        """Open client streams, bound to a resource or not yet (metrics)."""
        return len(self._open)

    def shutdown(self) -> None:
        """End every stream with ``system-shutdown`` (the server is stopping)."""
        for session in list(self._open):
            session.close("system-shutdown", "the server is shutting down")

    # ---- bound sessions ----
    def bind(self, session) -> None:
        self._bound.setdefault(session.account, {})[session.address.resource] = session

    def unbind(self, session) -> None:
        table = self._bound.get(session.account, {})
        if table.get(session.address.resource) is session:
            del table[session.address.resource]
            if not table:
                del self._bound[session.account]

    def sessions(self, account: Address) -> list:
        """The bound sessions of ``account`` (a bare address), in the order they bound."""
        return list(self._bound.get(account.bare, {}).values())

    def session(self, full: Address):
        """The bound session with the full JID ``full``, or None."""
        return self._bound.get(full.bare, {}).get(full.resource)

    def all_sessions(self) -> list:
        return [s for table in self._bound.values() for s in table.values()]
