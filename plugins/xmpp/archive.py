"""The message archive's writer for one service (XEP-0313), fed by the core's ``on_message``.

Every 1:1 message the router accepted — from XMPP, SIP, the HTTP API or a service user — whose
type is ``chat`` or ``normal`` and that has a body is archived once per local account it
concerns: in the sender's archive when the sender is a local account, in the recipient's when
the recipient is (one row each; a message to oneself, one row). XEP-0334 ``<no-store/>`` and
``<no-permanent-store/>`` keep a message out. Each account's preferences (XEP-0313 §7) are applied
when the rows are written.

The archive id is the message's XEP-0359 stanza id: ``XmppMessage.stanza_id`` for messages that
came over XMPP (the ``id`` there is the sender's), the message id for the others (the server made
it, ``new_id``). ``stanza_id_element`` gives the ``<stanza-id by='account'/>`` the server adds
when it delivers a message to an account; a message that was stored offline (it has a ``stamp``)
is looked up in the archive, so that it arrives with the id it has there (XEP-0313 §5.1.2:
clients dedupe by it; ejabberd issue #1331).

Writes are batched off the routing path: ``observe`` queues one item per message (its rows are
made by the database: ``archive_store.append``) and a greenlet writes all that are queued in one
statement; ``BATCH`` messages queued write at once, in the caller. A MAM
query and an offline lookup write what is queued first (``flush``), so a query sees every message
accepted before it. A failed write is logged and the items stay queued, retried ``RETRY`` s later;
``close`` (shutdown) writes what is left. Retention (``[xmpp] archive_retention`` days, 0 =
forever) is applied at start and every ``PURGE_INTERVAL`` seconds, to every archive in
``purgers`` (the rooms' too: ``muc_service``).
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from datetime import timedelta

import gevent
import gevent.lock

from convergence import Address, AddressError, contacts
from convergence.store import roster
from convergence.store.models import utcnow

from . import archive_store as store
from .stanza_ids import STANZA_ID, archivable, message_start, stanza_id_text, stanza_text

log = logging.getLogger(__name__)
Item, _new = store.Item, tuple.__new__



def _bare(address, jid: str) -> str:
    """``address``'s bare JID, given its ``jid``."""
    return jid.partition("/")[0] if address.resource else jid


class Archive:
    BATCH = 5000  #: messages queued that are written at once, by the caller (back-pressure)
    RETRY = 1.0  #: seconds before a failed write is tried again
    PURGE_INTERVAL = 3600.0  #: seconds between two retention runs

    def __init__(self, service):
        self.service = service
        self.core = service.core
        self.domain = service.domain
        self.settings = service.settings
        self.enabled = bool(service.settings["archive"])
        self.queued: list[store.Item] = []
        #: the message a session last wrote and its ``message_start`` (``messages.stanza``): the
        #: router delivers before ``on_message``, so ``observe`` takes the text instead of writing it again
        self.rendered: tuple = (None, "")
        self._lock = gevent.lock.Semaphore()
        self._writer = None
        self._purger = None
        self._thread_writer = store.SqliteWriter.of(self.core.db) if self.enabled else None
        self.purgers = [store.purge]  #: ``purge(db, older_than)`` of each archive (rooms': muc_service)

    # ---- lifecycle ----
    def start(self) -> None:
        if self.enabled and self._purger is None:
            self._purger = gevent.spawn(self._purge_loop)

    def close(self) -> None:
        if self._purger is not None:
            self._purger.kill()
            self._purger = None
        self.flush()
        if self._thread_writer is not None:
            self._thread_writer.close()

    def _purge_loop(self) -> None:
        while True:
            try:
                self.purge()
            except Exception:
                log.exception("archive retention run failed")
            gevent.sleep(self.PURGE_INTERVAL)  # a timer, not waiting for another greenlet

    def purge(self) -> int:
        days = self.settings["archive_retention"]
        if not days:
            return 0
        cutoff = utcnow() - timedelta(days=days)
        removed = sum(purge(self.core.db, cutoff) for purge in self.purgers)
        if removed:
            log.info("archive retention: %d messages older than %s days deleted", removed, days)
        return removed

    # ---- ids ----
    def stanza_id(self, message) -> str | None:
        """The archive id of ``message`` in its recipient's archive (see the module docstring)."""
        if message.stamp is not None:  # from the offline store: the id it got when it came
            self.flush()
            return store.stanza_id_of(self.core.db, message.recipient.local,
                                      message.sender.bare.jid, message.id)
        return getattr(message, "stanza_id", None) or message.id

    def stanza_id_element(self, message) -> ET.Element | None:
        """``<stanza-id by='account' id=''/>`` for ``message`` delivered to a local account."""
        by_id = self._stanza_id_by(message)
        return None if by_id is None else ET.Element(STANZA_ID, {"by": by_id[0], "id": by_id[1]})

    def stanza_id_text(self, message) -> str:
        """``stanza_id_element`` written as text ("" for none), for ``messages.stanza``."""
        by_id = self._stanza_id_by(message)
        return "" if by_id is None else stanza_id_text(*by_id)

    def _stanza_id_by(self, message) -> tuple[str, str] | None:
        recipient = message.recipient
        if not self.enabled or recipient.domain != self.domain or not recipient.local \
                or not archivable(message):
            return None
        sid = self.stanza_id(message)
        return None if sid is None else (recipient.bare.jid, sid)

    # ---- writing ----
    def observe(self, message) -> None:
        """The core's ``on_message``: queue the message's archive item (one per message)."""
        if not self.enabled or not archivable(message):
            return
        sender, recipient, domain = message.sender, message.recipient, self.domain
        local_sender = sender.local if sender.domain == domain else None
        local_recipient = recipient.local if recipient.domain == domain else None
        if local_recipient == local_sender:  # a message to oneself: one row; or none of ours
            local_recipient = None
            if not local_sender:
                return
        sender_jid, recipient_jid = sender.jid, recipient.jid
        rendered, start = self.rendered
        if rendered is not message:
            start = message_start(message, sender_jid, recipient_jid)
        self.queued.append(_new(Item, (  # tuple.__new__: a C call on the hot path
            self.stanza_id(message), store.now(), message.id,
            stanza_text(start), local_sender, sender_jid,
            _bare(sender, sender_jid), local_recipient, recipient_jid, _bare(recipient, recipient_jid))))
        if len(self.queued) >= self.BATCH:
            self.flush()
        elif self._writer is None:
            self._writer = gevent.spawn(self._write_queued, self.settings["archive_write_delay"])

    def _write_queued(self, delay: float = 0) -> None:
        """Write a batch every ``delay`` seconds while messages keep coming: each holds what came
        during one delay and one write (SQLite's cost per row falls as batches grow: under load
        a write right after the last would take only what came during it)."""
        try:
            while True:
                if delay:
                    gevent.sleep(delay)  # a timer: collect a batch, or wait before a retry
                if not self.queued or not self.flush():
                    break
        finally:
            self._writer = None
        if self.queued:  # the write failed: try again later, never drop them
            self._writer = gevent.spawn(self._write_queued, self.RETRY)

    def flush(self) -> bool:
        """Write every queued item now; False (items kept, error logged) if the store failed."""
        with self._lock:
            items, self.queued = self.queued, []
            if not items:
                return True
            try:
                if self._thread_writer is not None:  # SQLite: the worker thread works, the loop goes on
                    writer = lambda payload: gevent.get_hub().threadpool.apply(self._thread_writer, (payload,))  # noqa: E731
                else:
                    writer = None
                store.append(self.core.db, items, self._in_roster, writer)
                return True
            except Exception:
                log.exception("archiving %d messages failed; kept to retry", len(items))
                self.queued[:0] = items
                return False

    def _in_roster(self, account: str, peer_bare: str) -> bool:
        """For the ``roster`` default (XEP-0313 §7): ``peer_bare`` is on ``account``'s roster."""
        owner = Address(account, self.domain)
        try:
            peer = Address.from_jid(peer_bare)
        except AddressError:
            return False
        return contacts.is_shared(self.core, owner, peer) or \
            roster.get(self.core.db, account, peer_bare) is not None
