"""Stanza helpers shared by the c2s handlers: results and errors (RFC 6120 §8.2.3, §8.3).

Elements are ElementTree elements with ``{namespace}local`` names in ``jabber:client``.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from types import MappingProxyType

from .stream import CLIENT_NS

STANZA_ERROR_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"

#: RFC 6120 §8.3.3: each defined condition with its usual error type.
ERROR_TYPES = MappingProxyType({
    "bad-request": "modify", "conflict": "cancel", "feature-not-implemented": "cancel",
    "forbidden": "auth", "gone": "cancel", "internal-server-error": "cancel",
    "item-not-found": "cancel", "jid-malformed": "modify", "not-acceptable": "modify",
    "not-allowed": "cancel", "not-authorized": "auth", "policy-violation": "modify",
    "recipient-unavailable": "wait", "redirect": "modify", "registration-required": "auth",
    "remote-server-not-found": "cancel", "remote-server-timeout": "wait",
    "resource-constraint": "wait", "service-unavailable": "cancel", "subscription-required": "auth",
    "undefined-condition": "cancel", "unexpected-request": "wait",
})


def tag(local: str, ns: str = CLIENT_NS) -> str:
    return f"{{{ns}}}{local}"


class StanzaError(Exception):
    """Raised by a handler to answer the stanza with an error (§8.3)."""

    def __init__(self, condition: str, text: str | None = None, type: str | None = None,
                 app: ET.Element | None = None):
        super().__init__(text or condition)
        self.condition = condition
        self.text = text
        self.type = type or ERROR_TYPES.get(condition, "cancel")
        self.app = app  # an application-specific condition (§8.3.3.1), e.g. XEP-0060's


def iq_result(iq: ET.Element, payload: ET.Element | None = None) -> ET.Element:
    """The ``result`` answering ``iq`` (§8.2.3), from and to swapped."""
    reply = ET.Element(tag("iq"), _swapped(iq, type="result"))
    if payload is not None:
        reply.append(payload)
    return reply


def error_reply(stanza: ET.Element, error: StanzaError) -> ET.Element:
    """The error stanza answering ``stanza`` (§8.3.1): same name and id, from and to swapped.

    The original payload is not echoed back (§8.3.1 makes that optional)."""
    reply = ET.Element(stanza.tag, _swapped(stanza, type="error"))
    element = ET.SubElement(reply, tag("error"), type=error.type)
    ET.SubElement(element, tag(error.condition, STANZA_ERROR_NS))
    if error.text:
        ET.SubElement(element, tag("text", STANZA_ERROR_NS)).text = error.text
    if error.app is not None:
        element.append(error.app)
    return reply


def _swapped(stanza: ET.Element, **attrs) -> dict[str, str]:
    if stanza.get("id") is not None:
        attrs["id"] = stanza.get("id")
    if stanza.get("from"):
        attrs["to"] = stanza.get("from")
    if stanza.get("to"):
        attrs["from"] = stanza.get("to")
    return attrs
