"""Personal Eventing Protocol (XEP-0163): every account is a pubsub service (XEP-0060 subset).

IQs to the account's bare JID (or with no ``to``: one's own account):

- ``pubsub`` ``publish`` (§7.1) — only the owner; the node is created on first publish with the
  defaults (§7.1.4 auto-create, XEP-0163 §3) and the ``publish-options`` given (§7.1.5: on an
  existing node each option must match its configuration, else ``conflict`` +
  ``precondition-not-met``); a republished item id replaces the item; beyond the node's
  ``max_items`` the oldest items go. ``retract`` (§7.2), ``create`` (§8.1, with ``configure``),
  ``items`` (§6.5: all, by id, or the ``max_items`` newest). Subscriptions are implicit (XEP-0163
  §4): ``subscribe``/``unsubscribe``/``options``/``subscriptions``/``affiliations`` are
  ``feature-not-implemented`` with the pubsub ``unsupported`` condition.
- ``pubsub#owner`` ``configure`` get/set (§8.2), ``default`` (§8.3), ``delete`` (§8.4), ``purge``
  (§8.5), ``affiliations`` get/set (§8.9: ``member`` puts a bare JID on a whitelist).

Access models (§4.5): ``presence`` (the default: accounts that see the owner's presence,
subscription ``from``/``both`` or the shared roster, ``visibility.py``), ``open`` (any local
account; the OMEMO nodes default to it) and ``whitelist`` (the owner and the ``member``s). A read
that is refused: ``not-authorized`` + ``presence-subscription-required`` or ``not-allowed`` +
``closed-node`` (§6.5.9).

Notifications (XEP-0163 §4.3): a ``headline`` ``<message/>`` from the owner's bare JID with
``<event/>`` goes to each available session of the owner and of the accounts allowed by the node's
access model that see the owner's presence, when that session's entity capabilities (``caps.py``)
carry ``<node>+notify``. When a session's capabilities become known (its available presence,
XEP-0163 §6.1.2), it gets the last item of each such node of its own account and of every contact
whose presence it sees, unless the node says ``send_last_published_item = never``; a contact's
sessions get the owner's last items too when its subscription to the owner's presence starts.

Bounds (``[xmpp]``): ``pep_max_item_size`` bytes per item payload (more: ``not-acceptable`` +
``payload-too-big``, §7.1.3.4), ``pep_max_items`` items per node (``max_items`` ``max`` means this),
``pep_max_nodes`` nodes per account (``not-allowed`` + ``max-nodes-exceeded``). Other modules
publish through ``publish``/``retract`` here; ``pep-published`` (service, owner, node, item id,
payload) and ``pep-retracted`` (service, owner, node, item id) are emitted on the IQ router for them.
"""
from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET

from sqlalchemy.exc import IntegrityError

from convergence import Address, AddressError, contacts

from . import pep_store as store, pubsub_forms as forms, s2s_pep
from .stanzas import StanzaError, iq_result, tag
from .visibility import own, send, watched, watcher_accounts

PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = PUBSUB + "#owner"
EVENT = PUBSUB + "#event"
ERRORS = PUBSUB + "#errors"
MAX_NAME = 255  # characters of a node name or item id (the columns' size)
MAX_AFFILIATIONS = 1000  # whitelisted JIDs per node

#: Node defaults other than FIELDS' (XEP-0060 §16.4.4): OMEMO keys are for anyone to fetch
#: (XEP-0384 §5.3.1 asks for the open access model).
OPEN_NODES = ("eu.siacs.conversations.axolotl.devicelist", "eu.siacs.conversations.axolotl.bundles:",
              "urn:xmpp:omemo:2:devices", "urn:xmpp:omemo:2:bundles")

#: What the account's bare JID offers (XEP-0163 §1, XEP-0060 §10).
FEATURES = tuple(f"{PUBSUB}#{name}" for name in (
    "access-open", "access-presence", "access-whitelist", "auto-create", "auto-subscribe",
    "config-node", "create-and-configure", "create-nodes", "delete-items", "delete-nodes",
    "filtered-notifications", "item-ids", "last-published", "manage-affiliations",
    "modify-affiliations", "persistent-items", "presence-notifications", "publish",
    "publish-options", "purge-nodes", "retract-items", "retrieve-default", "retrieve-items")) + (PUBSUB,)


def register_iq(router) -> None:
    router.register(tag("pubsub", PUBSUB), pubsub_iq, to_account=True)
    router.register(tag("pubsub", OWNER), owner_iq, to_account=True)
    router.account_identity("pubsub", "pep")
    router.account_feature(*FEATURES)
    router.account_items(node_items)
    router.on("caps", send_last)
    router.on("subscribed", subscribed)


def error(condition: str, app: str | None = None, text: str | None = None, **attrs) -> StanzaError:
    """A stanza error with XEP-0060's application condition ``app`` (§7.1.3, §12)."""
    element = ET.Element(tag(app, ERRORS), attrs) if app else None
    return StanzaError(condition, text, app=element)


def unsupported(feature: str) -> StanzaError:
    return error("feature-not-implemented", "unsupported", feature=feature)


def node_defaults(name: str) -> dict:
    if name.startswith(OPEN_NODES):
        return forms.defaults(access_model="open")
    return forms.defaults()


# -- the IQs --
def _owner(service, session, iq: ET.Element) -> Address:
    if not iq.get("to"):
        return session.account
    owner = Address.parse(iq.get("to")).bare
    if not owner.local:
        raise StanzaError("service-unavailable", "no pubsub service on the domain; PEP is on accounts")
    return owner


def _node_name(element: ET.Element) -> str:
    name = element.get("node")
    if not name:
        raise error("bad-request", "nodeid-required")
    if len(name) > MAX_NAME:
        raise StanzaError("not-acceptable", f"node names are at most {MAX_NAME} characters")
    return name


def _own(session, owner: Address) -> None:
    if owner != session.account:
        raise StanzaError("forbidden", "only the account's owner publishes and configures its nodes")


def pubsub_iq(service, session, iq: ET.Element) -> ET.Element:
    owner = _owner(service, session, iq)
    pubsub, kind = iq[0], iq.get("type")
    beside = (tag("publish-options", PUBSUB), tag("configure", PUBSUB))  # with publish, create
    actions = [c for c in pubsub if c.tag not in beside] or list(pubsub)[:1]
    if len(actions) != 1:
        raise StanzaError("bad-request", "one pubsub action per request")
    action = actions[0]
    name = action.tag.rpartition("}")[2] if action.tag.startswith("{" + PUBSUB + "}") else ""
    if kind == "set" and name == "publish":
        return _publish(service, session, iq, owner, action, pubsub.find(tag("publish-options", PUBSUB)))
    if kind == "set" and name == "retract":
        return _retract(service, session, iq, owner, action)
    if kind == "set" and name == "create":
        return _create(service, session, iq, owner, action, pubsub.find(tag("configure", PUBSUB)))
    if kind == "get" and name == "items":
        return _items(service, session, iq, owner, action)
    if name in ("subscribe", "unsubscribe", "options", "subscriptions", "affiliations", "configure"):
        raise unsupported({"subscribe": "subscribe", "unsubscribe": "subscribe", "options":
                           "subscription-options", "subscriptions": "retrieve-subscriptions",
                           "affiliations": "retrieve-affiliations", "configure": "config-node"}[name])
    raise StanzaError("bad-request", "not a pubsub request this service knows")


def _publish(service, session, iq, owner, publish, options) -> ET.Element:
    _own(session, owner)
    node = _node_name(publish)
    items = publish.findall(tag("item", PUBSUB))
    if len(items) != 1 or len(publish) != 1:
        raise error("bad-request", "item-required" if not items else "invalid-payload",
                    "publish exactly one <item/>")
    item = items[0]
    if len(item) != 1:
        raise error("bad-request", "payload-required" if len(item) == 0 else "invalid-payload",
                    "an item carries exactly one payload element")
    item_id = item.get("id") or secrets.token_hex(8)
    if len(item_id) > MAX_NAME:
        raise StanzaError("not-acceptable", f"item ids are at most {MAX_NAME} characters")
    wanted = forms.parse(options[0] if options is not None and len(options) else None,
                         forms.PUBLISH_OPTIONS)
    publish_item(service, owner, node, item_id, item[0], session.address.jid, wanted)
    result = ET.Element(tag("pubsub", PUBSUB))
    ET.SubElement(ET.SubElement(result, tag("publish", PUBSUB), node=node), tag("item", PUBSUB), id=item_id)
    return iq_result(iq, result)


def _retract(service, session, iq, owner, retract) -> ET.Element:
    _own(session, owner)
    node = _node_name(retract)
    items = retract.findall(tag("item", PUBSUB))
    if len(items) != 1 or not items[0].get("id"):
        raise error("bad-request", "item-required", "retract one <item/> by its id")
    notify = retract.get("notify") in ("1", "true")
    if not retract_item(service, owner, node, items[0].get("id"), notify):
        raise StanzaError("item-not-found", "no such node or item")  # §7.2.3.5
    return iq_result(iq)


def _create(service, session, iq, owner, create, configure) -> ET.Element:
    _own(session, owner)
    if not create.get("node"):
        raise error("not-acceptable", "nodeid-required", "instant nodes are not supported")  # §8.1.2
    node = _node_name(create)
    config = node_defaults(node)
    if configure is not None and len(configure):
        config.update(forms.parse(configure[0], forms.NODE_CONFIG))
    try:
        created = store.create(service.core.db, owner.local, node, config, _setting(service, "pep_max_nodes"))
    except store.TooManyNodes:
        raise _too_many(service) from None
    if not created:
        raise StanzaError("conflict", "the node exists")  # §8.1.3.4
    return iq_result(iq)


def _items(service, session, iq, owner, request) -> ET.Element:
    node_name = _node_name(request)
    ids = [i.get("id") for i in request.findall(tag("item", PUBSUB))]
    if any(not i for i in ids):
        raise error("bad-request", "item-required", "items by id need their id")
    last = None
    if request.get("max_items") is not None:
        text = request.get("max_items")
        if not text.isdigit() or int(text) < 1:
            raise StanzaError("bad-request", "max_items is a positive number")
        last = min(int(text), _setting(service, "pep_max_items"))
    node = _readable(service, session.account, owner, node_name)
    found = store.items(service.core.db, owner.local, node.name, ids or None, last)
    result = ET.Element(tag("pubsub", PUBSUB))
    items = ET.SubElement(result, tag("items", PUBSUB), node=node.name)
    for item in found:
        ET.SubElement(items, tag("item", PUBSUB), id=item.id).append(ET.fromstring(item.payload))
    return iq_result(iq, result)


def node_items(service, session, owner: Address) -> list[tuple[str, str]]:
    """disco#items of an account (XEP-0163 §7, XEP-0060 §5.2): the nodes the asker may read."""
    found = store.nodes_of(service.core.db, owner.local)
    return [(owner.jid, node.name) for node in found
            if _allowed(service, session.account, owner, node) is None]


def owner_iq(service, session, iq: ET.Element) -> ET.Element:
    owner = _owner(service, session, iq)
    _own(session, owner)
    if len(iq[0]) != 1:
        raise StanzaError("bad-request", "one pubsub#owner action per request")
    action, kind = iq[0][0], iq.get("type")
    name = action.tag.rpartition("}")[2] if action.tag.startswith("{" + OWNER + "}") else ""
    db = service.core.db
    if name == "default" and kind == "get":  # §8.3
        result = ET.Element(tag("pubsub", OWNER))
        ET.SubElement(result, tag("default", OWNER)).append(forms.form(forms.defaults()))
        return iq_result(iq, result)
    if name not in ("configure", "delete", "purge", "affiliations"):
        raise StanzaError("bad-request", "not a pubsub#owner request this service knows")
    node_name = _node_name(action)
    node = store.node(db, owner.local, node_name)
    if node is None:
        raise StanzaError("item-not-found", "no such node")
    if name == "configure" and kind == "get":  # §8.2.1
        result = ET.Element(tag("pubsub", OWNER))
        ET.SubElement(result, tag("configure", OWNER), node=node_name).append(forms.form(node.config))
        return iq_result(iq, result)
    if name == "configure" and kind == "set":  # §8.2.4
        x = action.find(f"{{{forms.DATA}}}x")
        if x is not None and x.get("type") == "cancel":
            return iq_result(iq)
        if x is None:
            raise StanzaError("bad-request", "a configuration form is needed")
        config = {**node.config, **forms.parse(x, forms.NODE_CONFIG)}
        store.configure(db, owner.local, node_name, config,
                        forms.max_items(config, _setting(service, "pep_max_items")))
        return iq_result(iq)
    if name == "delete" and kind == "set":  # §8.4: notify, then delete
        audience = _audience(service, owner, node)
        store.remove(db, owner.local, node_name)
        if forms.truth(node.config.get("notify_delete", "true")):
            _notify(audience, node_name, owner, ET.Element(tag("delete", EVENT), node=node_name))
        return iq_result(iq)
    if name == "purge" and kind == "set":  # §8.5
        store.purge(db, owner.local, node_name)
        _notify(_audience(service, owner, node), node_name, owner, ET.Element(tag("purge", EVENT), node=node_name))
        return iq_result(iq)
    if name == "affiliations" and kind == "get":  # §8.9.1
        result = ET.Element(tag("pubsub", OWNER))
        listing = ET.SubElement(result, tag("affiliations", OWNER), node=node_name)
        ET.SubElement(listing, tag("affiliation", OWNER), jid=owner.jid, affiliation="owner")
        for jid, affiliation in sorted(store.affiliations(db, owner.local, node_name).items()):
            ET.SubElement(listing, tag("affiliation", OWNER), jid=jid, affiliation=affiliation)
        return iq_result(iq, result)
    if name == "affiliations" and kind == "set":  # §8.9.2
        changes = {}
        for entry in action.findall(tag("affiliation", OWNER)):
            try:
                jid = Address.parse(entry.get("jid") or "").bare
            except AddressError as exc:
                raise StanzaError("jid-malformed", str(exc)) from None
            if jid == owner or entry.get("affiliation") not in ("member", "none"):
                raise StanzaError("not-acceptable", "PEP affiliations are member or none (the owner stays owner)")
            changes[jid.jid] = entry.get("affiliation")
        if not store.set_affiliations(db, owner.local, node_name, changes, MAX_AFFILIATIONS):
            raise StanzaError("not-acceptable", f"at most {MAX_AFFILIATIONS} affiliations per node")
        return iq_result(iq)
    raise StanzaError("bad-request", f"{name} is not defined for type {kind}")


# -- publishing for this and other modules --
def publish_item(service, owner: Address, node: str, item_id: str, payload: ET.Element,
                 publisher: str, wanted: dict | None = None, defaults=None) -> None:
    """Store an item and notify (XEP-0163 §4.3). A missing node is created with its usual
    defaults, changed by ``defaults`` (a mapping) and the ``wanted`` publish options, which an
    existing node must already have (§7.1.5)."""
    wanted = wanted or {}
    text = ET.tostring(payload, encoding="unicode")
    if len(text.encode()) > _setting(service, "pep_max_item_size"):
        raise error("not-acceptable", "payload-too-big",
                    f"an item is at most {_setting(service, 'pep_max_item_size')} bytes")
    db = service.core.db
    existing = store.node(db, owner.local, node)
    if existing is not None:
        for field, value in wanted.items():  # §7.1.5: preconditions
            if existing.config.get(field, forms.FIELDS[field][2]) != value:
                raise error("conflict", "precondition-not-met", f"pubsub#{field} is not {value!r}")
        config = existing.config
    else:
        config = {**node_defaults(node), **(defaults or {}), **wanted}
    args = (db, owner.local, node, store.Item(item_id, text), publisher, config,
            forms.max_items(config, _setting(service, "pep_max_items")), _setting(service, "pep_max_nodes"))
    try:
        try:
            store.publish(*args)
        except IntegrityError:  # the node or item id was created by a concurrent publish: again
            store.publish(*args)
    except store.TooManyNodes:
        raise _too_many(service) from None
    current = existing or store.Node(node, config)
    if forms.truth(config.get("deliver_notifications", "true")):
        event = _items_event(node, item_id, payload, config)
        _notify(_audience(service, owner, current), node, owner, event)
        s2s_pep.notify(service, owner, current, _message(owner, event))
    service.iq.emit("pep-published", service, owner, node, item_id, payload)


def retract_item(service, owner: Address, node: str, item_id: str, notify: bool = False) -> bool:
    """Delete an item; notify when asked or the node says ``notify_retract`` (§7.2.2.1)."""
    found = store.node(service.core.db, owner.local, node)
    if found is None or not store.retract(service.core.db, owner.local, node, item_id):
        return False
    if notify or forms.truth(found.config.get("notify_retract", "true")):
        event = ET.Element(tag("items", EVENT), node=node)
        ET.SubElement(event, tag("retract", EVENT), id=item_id)
        _notify(_audience(service, owner, found), node, owner, event)
        s2s_pep.notify(service, owner, found, _message(owner, event))
    service.iq.emit("pep-retracted", service, owner, node, item_id)
    return True


def _too_many(service) -> StanzaError:
    return error("not-allowed", "max-nodes-exceeded",
                 f"an account has at most {_setting(service, 'pep_max_nodes')} nodes")


def _setting(service, name: str) -> int:
    return service.settings[name]


# -- who may read, who is told --
def _allowed(service, reader: Address, owner: Address, node: store.Node) -> str | None:
    """None if ``reader`` may read ``node``, else the reason (§6.5.9)."""
    model = node.config.get("access_model", "presence")
    if reader == owner or model == "open":
        return None
    if model == "whitelist":
        return None if reader.jid in node.members else "closed-node"
    return None if contacts.sees(service.core, reader, owner) else "presence-subscription-required"


def _readable(service, reader: Address, owner: Address, name: str) -> store.Node:
    node = store.node(service.core.db, owner.local, name)
    if node is None:
        raise StanzaError("item-not-found", "no such node")
    refused = _allowed(service, reader, owner, node)
    if refused == "closed-node":
        raise error("not-allowed", "closed-node", "the node is whitelisted")
    if refused:
        raise error("not-authorized", refused, "subscribe to the owner's presence first")
    return node


def _audience(service, owner: Address, node: store.Node) -> list:
    """Available sessions that may receive ``node``'s events: the owner's, and those of the
    accounts that see the owner's presence and pass the access model."""
    sessions = own(service, owner)
    for account in watcher_accounts(service, owner):
        if _allowed(service, account, owner, node) is None:
            sessions += own(service, account)
    return sessions


def _notify(sessions: list, node: str, owner: Address, event_child: ET.Element) -> None:
    """The event to each session that asked for ``node+notify`` (XEP-0163 §4.3)."""
    wanting = [s for s in sessions if node in s.service.caps.notify(s.address)]
    if wanting:
        send(wanting, _message(owner, event_child))


def _message(owner: Address, event_child: ET.Element) -> ET.Element:
    message = ET.Element(tag("message"), {"from": owner.jid, "type": "headline",
                                          "id": "pep-" + secrets.token_hex(6)})
    ET.SubElement(message, tag("event", EVENT)).append(event_child)
    return message


def _items_event(node: str, item_id: str, payload: ET.Element | None, config: dict) -> ET.Element:
    items = ET.Element(tag("items", EVENT), node=node)
    item = ET.SubElement(items, tag("item", EVENT), id=item_id)
    if payload is not None and forms.truth(config.get("deliver_payloads", "true")):
        item.append(payload)
    return items


def send_last(service, session) -> None:
    """The session's capabilities are known: the last item of each node it wants, of its own
    account and of each contact whose presence it sees (XEP-0163 §6.1.2, §4.3.3)."""
    owners = [session.account] + [c for c in watched(service, session.account) if c != session.account]
    _send_last(service, session, owners, ("never", "on_sub"))


def subscribed(service, owner: Address, sessions: list, contact: Address | None = None) -> None:
    """The sessions' account (``contact``) now sees ``owner``'s presence (RFC 6121 §3.1.5): it is
    subscribed to ``owner``'s nodes, so each session gets their last items (XEP-0060 §6.1.7); so
    does each entity of a remote ``contact`` whose interests are known (``s2s_pep``)."""
    for session in sessions:
        _send_last(service, session, [owner], ("never",))
    if contact is not None:
        for address in s2s_pep.known(service, contact):
            send_last_remote(service, address, [owner], ("never",))


def _send_last(service, session, owners: list, not_when: tuple) -> None:
    """The last items of ``owners``' nodes the session wants, but not from nodes whose
    ``send_last_published_item`` is in ``not_when`` (XEP-0060 §16.4.4)."""
    wanted = service.caps.notify(session.address)
    if not wanted or not session.available:
        return
    for message in _last_messages(service, owners, wanted, not_when,
                                  lambda owner, node: _allowed(service, session.account, owner, node) is None):
        send([session], message)


def send_last_remote(service, address: Address, owners: list | None = None,
                     not_when: tuple = ("never", "on_sub")) -> None:
    """XEP-0163 §6.1.2 for an entity of another domain whose interests became known
    (``s2s_pep.learn``): the last items it wants of the local accounts whose presence it sees
    (or of ``owners``)."""
    wanted = s2s_pep.notify_set(service, address)
    if not wanted:
        return
    if owners is None:
        owners = s2s_pep.owners_seen_by(service, address)
    for message in _last_messages(service, owners, wanted, not_when,
                                  lambda owner, node: s2s_pep.may_read(address, node)):
        s2s_pep.send(service, address, message)


def _last_messages(service, owners: list, wanted, not_when: tuple, allowed):
    """The event messages of the last items of ``owners``' ``wanted`` nodes that ``allowed(owner,
    node)``, but not from nodes whose ``send_last_published_item`` is in ``not_when``."""
    for owner, node, item in store.last_items(service.core.db, [o.local for o in owners], wanted):
        owner = service.core.address(owner)
        if node.config.get("send_last_published_item") in not_when:
            continue
        if not forms.truth(node.config.get("deliver_notifications", "true")):
            continue
        if allowed(owner, node):
            event = _items_event(node.name, item.id, ET.fromstring(item.payload), node.config)
            yield _message(owner, event)
