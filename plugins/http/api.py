"""The JSON API for HTTP clients under ``/api`` (docs/http-api.md; described at /api/openapi.json).

An HTTP client is a full participant: it sends messages as its account and never as anyone else
(a ``from`` field is refused), reads its roster and its contacts' presence, and receives its
messages and presence changes as Server-Sent Events (``events.py``). Every request except the
OpenAPI document authenticates (``auth.py``); every error is JSON ``{"status", "message"}``.
"""
from __future__ import annotations

import re
from types import MappingProxyType

from flask import Blueprint, Response, current_app, g, request

from convergence import Address, AddressError, Message, RoutingError, contacts
from convergence.message import MESSAGE_TYPES, NOT_XML_CHARS
from convergence.router import STORED

from . import events, openapi
from .auth import Authenticator
from .errors import ApiError, render

blueprint = Blueprint("api", __name__, url_prefix="/api")

MESSAGE_FIELDS = ("to", "body", "type", "subject", "thread", "stream")
MESSAGE_TYPES_IN = tuple(t for t in MESSAGE_TYPES if t != "error")
#: RFC 6120 §8.3.3 condition of a refused message → HTTP status (any other condition: 503).
STATUS = MappingProxyType({
    "item-not-found": 404, "service-unavailable": 404, "remote-server-not-found": 404,
    "recipient-unavailable": 404, "policy-violation": 413, "resource-constraint": 503,
    "not-allowed": 403, "forbidden": 403, "bad-request": 400, "jid-malformed": 400,
    "not-acceptable": 400, "remote-server-timeout": 504})
NOT_XML = re.compile(f"[{NOT_XML_CHARS}]")


@blueprint.record_once
def _setup(state):
    state.app.extensions["convergence.http.auth"] = Authenticator(state.app.extensions["convergence"])


def _core():
    return current_app.extensions["convergence"]


@blueprint.before_request
def authenticate():
    request.max_content_length = _core().config["http"]["max_body"]
    if request.endpoint != "api.openapi_document":
        auth = current_app.extensions["convergence.http.auth"]
        g.account = auth.account(request.authorization, request.remote_addr)


@blueprint.errorhandler(ApiError)
def api_error(error: ApiError):
    return render(error)


@blueprint.errorhandler(413)
def too_large(_):
    limit = _core().config["http"]["max_body"]
    return render(ApiError(413, f"the request body is larger than {limit} bytes ([http] max_body)"))


# -- sending ---------------------------------------------------------------------------------------
def _json_object() -> dict:
    if not request.is_json:
        raise ApiError(415, "the request body must be JSON (Content-Type: application/json)")
    data = request.get_json(silent=True)  # a body over max_body raises 413 before parsing
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _text(data: dict, field: str, required: bool = False) -> str | None:
    value = data.get(field)
    if value is None:
        if required:
            raise ApiError(400, f"{field}: required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{field}: must be a string")
    if NOT_XML.search(value):
        raise ApiError(400, f"{field}: contains a control character that XMPP cannot carry")
    return value


def _sender(core, account: Address, stream_id: str | None) -> Address:
    """The account, or the named event stream of the account (replies then go to that stream)."""
    if stream_id is None:
        return account
    stream = core.presence.endpoint(account.with_resource(stream_id))
    if not isinstance(stream, events.Stream):
        raise ApiError(400, f"stream: {stream_id!r} is not an open event stream of {account}")
    return stream.address


@blueprint.post("/messages")
def send_message():
    """Send a message from the authenticated account (ejabberd ``send_message`` shape)."""
    data = _json_object()
    if "from" in data:
        raise ApiError(400, "from: not allowed; messages are always from the authenticated account")
    unknown = sorted(set(data) - set(MESSAGE_FIELDS))
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown field (known: {', '.join(MESSAGE_FIELDS)})")
    try:
        to = Address.parse(_text(data, "to", required=True))
    except AddressError as exc:
        raise ApiError(400, f"to: {exc}") from None
    body = _text(data, "body", required=True)
    subject, thread = _text(data, "subject"), _text(data, "thread")
    if not body and not subject:
        raise ApiError(400, "body: must not be empty")
    kind = _text(data, "type") or "chat"
    if kind not in MESSAGE_TYPES_IN:
        raise ApiError(400, f"type: must be one of {', '.join(MESSAGE_TYPES_IN)}")
    core = _core()
    message = Message(_sender(core, g.account, _text(data, "stream")), to, body, subject, thread, kind)
    try:
        outcome = core.send(message, "http")
    except RoutingError as exc:
        if exc.retry_after is not None:  # temporary (a cluster without Redis): try again later
            raise ApiError(503, exc.text, {"Retry-After": str(round(exc.retry_after))},
                           condition=exc.condition) from None
        raise ApiError(STATUS.get(exc.condition, 503), exc.text, condition=exc.condition) from None
    return {"id": message.id, "outcome": outcome}, 202 if outcome == STORED else 200


# -- roster and presence -----------------------------------------------------------------------------
def _presence(core, contact: Address) -> dict:
    presence = core.presence.presence(contact)
    return {"available": presence.available, "show": presence.show, "status": presence.status}


@blueprint.get("/roster")
def roster():
    """The account's contacts; ``presence`` only for those whose presence it sees."""
    core = _core()
    items, version = contacts.view(core, g.account)
    return {"version": version, "contacts": [
        {"jid": i.jid, "name": i.name, "subscription": i.subscription, "groups": list(i.groups),
         "presence": _presence(core, Address.parse(i.jid)) if i.subscription in contacts.SEES else None}
        for i in items]}


@blueprint.get("/presence/<path:jid>")
def presence(jid: str):
    """One contact's presence: 404 when not on the contact list, 403 without a subscription to it."""
    core = _core()
    try:
        contact = Address.parse(jid).bare
    except AddressError as exc:
        raise ApiError(400, f"jid: {exc}") from None
    if contact != g.account:
        items, _ = contacts.view(core, g.account)
        item = next((i for i in items if i.jid == contact.jid), None)
        if item is None:
            raise ApiError(404, f"{contact} is not on your contact list")
        if item.subscription not in contacts.SEES:
            raise ApiError(403, f"you have no subscription to the presence of {contact}")
    return {"jid": contact.jid, **_presence(core, contact)}


# -- events ----------------------------------------------------------------------------------------
@blueprint.get("/events")
def event_stream():
    """Server-Sent Events: this connection is an online endpoint of the account while it lasts."""
    core = _core()
    settings = core.config["http"]
    streams = core.pm.get_plugin("http:server").streams  # the HTTP plugin's object for this core
    stream = events.Stream(core, streams, g.account, settings["sse_queue"])
    return Response(stream.events(settings["sse_keepalive"]), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@blueprint.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3.1 description of this API (no authentication)."""
    return openapi.document(_core())
