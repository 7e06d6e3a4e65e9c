"""The OpenAPI 3.1 document of the API (served at ``/api/openapi.json``): the one description of
every endpoint, scheme and schema; docs/http-api.md is its prose companion."""
from convergence import __version__


def _json(schema: str) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _error(description: str) -> dict:
    return {"description": description, "content": _json("Error")}


# What the server accepts (core/addresses.py, RFC 7622 and RFC 7247 §5.2), written for generators:
# ASCII localparts and domains; any other address the server takes (Unicode localparts, IDN
# domains, IP literals) is described in prose, not matched.
_LOCAL = r"[A-Za-z0-9!#$*+=^_`{|}~.-]{1,1023}"
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
#: Text XML 1.0 can carry (§2.2; convergence.message.NOT_XML_CHARS): no other control characters.
XML_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]*$"


def _tables() -> tuple[dict, dict]:
    """The schemas and the paths, built afresh for each document: no module-level table that
    a caller could change for every later request."""
    nullable_string = {"type": ["string", "null"]}
    address = {
        "type": "string", "minLength": 1, "maxLength": 3071,
        "pattern": rf"^(?:(?:xmpp:|im:|pres:)?(?:{_LOCAL}@)?{_DOMAIN}(?:/[^\x00-\x20][^\x00-\x1f]{{0,1022}})?"
                   rf"|sips?:{_LOCAL}@{_DOMAIN})$",
        "description": "a JID (alice@example.org[/resource]) or a sip:, xmpp:, im: or pres: URI "
                       "(RFC 7247 §5.2); localparts may also be Unicode (RFC 7622), domains IDNs",
    }
    text = {"type": "string", "pattern": XML_TEXT}
    nullable_text = {"type": ["string", "null"], "pattern": XML_TEXT}
    unauthorized = {"$ref": "#/components/responses/Unauthorized"}
    throttled = {"$ref": "#/components/responses/Throttled"}

    schemas = {
        "Error": {
            "type": "object", "required": ["status", "message"],
            "properties": {
                "status": {"type": "integer", "description": "the HTTP status, repeated"},
                "message": {"type": "string", "description": "what went wrong; names the field for 400"},
                "condition": {"type": "string", "description": "for a refused message: the RFC 6120 "
                              "§8.3.3 condition (item-not-found, policy-violation, resource-constraint …)"},
            },
        },
        "SendRequest": {
            "type": "object", "required": ["to", "body"], "additionalProperties": False,
            "properties": {
                "to": address,
                "body": {**text, "description": "the text; may be empty only with a subject"},
                "type": {"type": "string", "enum": ["chat", "normal", "headline", "groupchat"],
                         "default": "chat"},
                "subject": nullable_text,
                "thread": nullable_text,
                "stream": {"type": "string", "pattern": "^http-[0-9a-f]{16}$",
                           "description": "send from this open event stream of the account (its id "
                           "from the `stream` event), so that replies come back to it"},
            },
            "anyOf": [{"properties": {"body": {"minLength": 1}}},
                      {"required": ["subject"], "properties": {"subject": {"type": "string",
                                                                           "minLength": 1}}}],
            "description": "There is no `from`: the sender is always the authenticated account "
                           "(a `from` field is refused with 400).",
        },
        "SendResult": {
            "type": "object", "required": ["id", "outcome"],
            "properties": {"id": {"type": "string"},
                           "outcome": {"type": "string", "enum": ["delivered", "stored", "discarded"]}},
        },
        "Presence": {
            "type": "object", "required": ["available", "show", "status"],
            "properties": {
                "available": {"type": "boolean"},
                "show": {"type": ["string", "null"], "enum": ["chat", "away", "xa", "dnd", None],
                         "description": "RFC 6121 §4.7.2.1; null is plainly available"},
                "status": nullable_string,
            },
        },
        "ContactPresence": {
            "allOf": [{"$ref": "#/components/schemas/Presence"},
                      {"type": "object", "required": ["jid"], "properties": {"jid": {"type": "string"}}}],
        },
        "Contact": {
            "type": "object", "required": ["jid", "name", "subscription", "groups", "presence"],
            "properties": {
                "jid": {"type": "string"},
                "name": nullable_string,
                "subscription": {"type": "string", "enum": ["none", "to", "from", "both"]},
                "groups": {"type": "array", "items": {"type": "string"}},
                "presence": {"oneOf": [{"$ref": "#/components/schemas/Presence"}, {"type": "null"}],
                             "description": "null unless the subscription is to or both"},
            },
        },
        "Roster": {
            "type": "object", "required": ["version", "contacts"],
            "properties": {"version": {"type": "string"},
                           "contacts": {"type": "array", "items": {"$ref": "#/components/schemas/Contact"}}},
        },
        "MessageEvent": {
            "type": "object", "description": "the data of an SSE `message` event",
            "required": ["id", "from", "to", "type", "body", "subject", "thread", "stamp", "error"],
            "properties": {
                "id": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
                "type": {"type": "string", "enum": ["chat", "normal", "headline", "groupchat", "error"]},
                "body": {"type": "string"}, "subject": nullable_string, "thread": nullable_string,
                "stamp": {"type": ["string", "null"], "format": "date-time",
                          "description": "when it was stored while the account was offline (UTC)"},
                "error": {"type": ["string", "null"], "description": "for type error: the RFC 6120 "
                          "condition; body then says what went wrong"},
            },
        },
        "StreamEvent": {
            "type": "object", "description": "the data of the first SSE event, `stream`",
            "required": ["stream", "jid"],
            "properties": {"stream": {"type": "string"}, "jid": {"type": "string"}},
        },
    }

    paths = {
        "/api/messages": {"post": {
            "summary": "Send a message from the authenticated account",
            "operationId": "sendMessage",
            "requestBody": {"required": True, "content": _json("SendRequest")},
            "responses": {
                "200": {"description": "delivered to a live endpoint (or discarded, see outcome)",
                        "content": _json("SendResult")},
                "202": {"description": "the recipient is offline: stored for later",
                        "content": _json("SendResult")},
                "400": _error("not a JSON object, a missing or invalid field (named), or a `from`"),
                "401": unauthorized,
                "403": _error("refused by the recipient's side (not-allowed, forbidden)"),
                "404": _error("no such recipient (item-not-found, service-unavailable, "
                              "remote-server-not-found)"),
                "413": _error("the request body is over [http] max_body, or the text is larger than "
                              "a protocol on its path carries (policy-violation)"),
                "415": _error("the Content-Type is not JSON"),
                "429": throttled,
                "503": _error("the recipient cannot take more messages now (resource-constraint)"),
            },
        }},
        "/api/roster": {"get": {
            "summary": "The account's contacts with their presence",
            "operationId": "getRoster",
            "responses": {"200": {"description": "the roster", "content": _json("Roster")},
                          "401": unauthorized, "429": throttled},
        }},
        "/api/presence/{jid}": {"get": {
            "summary": "The presence of one contact (or of the account itself)",
            "operationId": "getPresence",
            "parameters": [{"name": "jid", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "the contact's combined presence", "content": _json("ContactPresence")},
                "400": _error("not a valid address"),
                "401": unauthorized,
                "403": _error("on the contact list, but without a subscription to its presence"),
                "404": _error("not on the contact list"),
                "429": throttled,
            },
        }},
        "/api/events": {"get": {
            "summary": "The account's messages and contacts' presence as Server-Sent Events",
            "description": "While the connection is open it is an online endpoint of the account "
                           "(resource http-<id>). Events: `stream` (StreamEvent) first, `presence` "
                           "(ContactPresence) for each available contact and at every change, "
                           "`message` (MessageEvent). Comment lines keep the connection alive.",
            "operationId": "events",
            "responses": {"200": {"description": "an endless event stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          "401": unauthorized, "429": throttled},
        }},
        "/api/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
        }},
    }
    return schemas, paths


def document(core) -> dict:
    """The document for this server (its domain is the authentication realm)."""
    schemas, paths = _tables()
    return {
        "openapi": "3.1.0",
        "info": {"title": "Convergence HTTP API", "version": __version__,
                 "description": f"Messages, roster, presence and live events of accounts of "
                                f"{core.domain}, reaching XMPP clients and SIP phones alike."},
        "paths": paths,
        "security": [{"basic": []}, {"bearer": []}],
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic", "description": "the account name "
                          "(or bare JID) and its password (RFC 7617)"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "a token from "
                           "`convergence token create USER` (RFC 6750)"},
            },
            "responses": {
                "Unauthorized": {"description": "missing or wrong credentials, or a revoked token; "
                                 "WWW-Authenticate names both schemes",
                                 "content": _json("Error")},
                "Throttled": {"description": "too many failed logins from this address "
                              "(Retry-After says when to try again)", "content": _json("Error")},
            },
            "schemas": schemas,
        },
    }
