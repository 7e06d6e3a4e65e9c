"""An account's contacts for every protocol: its stored roster (RFC 6121 §2) combined with the
shared roster, and whose presence the account may see.

The **shared roster** (on unless a plugin's ``share_roster`` hook says otherwise: the XMPP plugin
answers from its settings) gives every account every other account of the domain and the service
users (those the plugins declare with the ``service_users`` hook: echo, the HTTP user) as contacts
with subscription ``both`` in the group ``Friends``, like the original sample. For a JID in both,
the stored item supplies the name and groups (the user may rename or regroup a shared contact) and
the shared roster the subscription. The roster version (§2.6) is
the stored version, plus a digest of the shared contacts when the shared roster is on, so
creating or deleting an account also changes every version.

The XMPP roster (``convergence.plugins.xmpp.roster``) and the HTTP API read rosters here.
No network I/O.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

from .addresses import Address, AddressError
from .store import accounts
from .store import roster as store
from .store.roster import Item

SHARED_GROUP = "Friends"
#: Subscriptions under which the account sees the contact's presence (RFC 6121 §3, §4.3).
SEES = ("to", "both")


def shared_on(core) -> bool:
    """Whether the shared roster is on: the ``share_roster`` hook's answer, on when none answers."""
    return core.pm.answer("share_roster", lambda: core.hook.share_roster(core=core) is not False)


def service_users(core) -> tuple[Address, ...]:
    """The domain's account-less contacts, as every plugin declares them (``service_users`` hook)."""
    return core.pm.answer("service_users", lambda: tuple(dict.fromkeys(
        a for users in core.hook.service_users(core=core) for a in users or ())))


def shared_contacts(core, account: Address) -> list[Address]:
    """The contacts the shared roster gives ``account`` (none when it is off)."""
    if not shared_on(core):
        return []
    others = [core.address(name) for name in accounts.names(core.db)]
    return [a for a in dict.fromkeys([*others, *service_users(core)]) if a != account.bare]


def is_shared(core, account: Address, contact: Address) -> bool:
    """``contact`` is on ``account``'s roster through the shared roster."""
    if not shared_on(core) or contact.domain != core.domain or not contact.local \
            or contact.resource or contact == account.bare:
        return False
    return (contact in service_users(core) or bool(core.presence.endpoints(contact))
            or accounts.exists(core.db, contact.local))


def view(core, account: Address, stored: tuple[list[Item], int] | None = None) -> tuple[list[Item], str]:
    """The items ``account`` sees and the roster version string (§2.6); ``stored`` is what
    ``store.items`` returns when the caller has read it already."""
    stored, version = stored or store.items(core.db, account.local)
    if not shared_on(core):
        return stored, str(version)
    shared = {c.jid: c for c in shared_contacts(core, account)}
    items = [replace(i, subscription="both", ask=False, approved=False) if i.jid in shared else i
             for i in stored]
    known = {i.jid for i in stored}
    items += [Item(jid, None, "both", groups=(SHARED_GROUP,)) for jid in shared if jid not in known]
    digest = hashlib.sha1("\n".join(sorted(shared)).encode()).hexdigest()[:10]
    return items, f"{version}-{digest}"


def _local(core, jid: str) -> Address | None:
    """The bare local address ``jid`` names, or None (another domain, a resource, malformed)."""
    try:
        address = Address.parse(jid)
    except AddressError:
        return None
    return address if address.domain == core.domain and address.local and not address.resource else None


def watched(core, account: Address, stored: tuple[list[Item], int] | None = None) -> list[Address]:
    """The local contacts whose presence ``account`` sees (subscription ``to``/``both``)."""
    items, _ = view(core, account, stored)
    return [a for a in (_local(core, i.jid) for i in items if i.subscription in SEES) if a]


def sees(core, account: Address, contact: Address) -> bool:
    """Whether ``account`` sees the presence of ``contact`` (one contact: no full roster read):
    the roster allows it and no plugin keeps it (``screened``)."""
    return roster_allows(core, account, contact) and not screened(core, account, contact)


def roster_allows(core, account: Address, contact: Address) -> bool:
    """Whether the roster (stored or shared) lets ``account`` see the presence of ``contact``."""
    contact = contact.bare
    if _local(core, contact.jid) is None or contact == account.bare:
        return False
    if is_shared(core, account, contact):
        return True
    item = store.get(core.db, account.local, contact.jid)
    return item is not None and item.subscription in SEES


def screened(core, watcher: Address, account: Address) -> bool:
    """Whether a plugin keeps ``account``'s presence from ``watcher`` whatever the rosters say
    (the ``screen_presence`` hook: a block list, XEP-0191)."""
    return any(core.hook.screen_presence(core=core, watcher=watcher.bare, account=account.bare))
