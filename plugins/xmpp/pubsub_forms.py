"""Data forms (XEP-0004) for PEP node configuration (XEP-0060 §16.4.4 ``pubsub#node_config``) and
publish options (XEP-0060 §7.1.5 ``pubsub#publish-options``).

``NODE_CONFIG`` is every configuration field the PEP service knows, with its allowed values; a
node's configuration is a plain dict ``{field without the pubsub# prefix: value}``. ``parse``
reads a submitted form into such a dict (``not-acceptable`` for an unknown field or a value out of
range, XEP-0060 §8.2.5.2), ``form`` writes one out. ``max_items`` is a number or ``max`` (§16.4.4),
kept as given and capped by ``[xmpp] pep_max_items`` where it is used.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from types import MappingProxyType

from .stanzas import StanzaError

DATA = "jabber:x:data"
NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
BOOLEAN = ("0", "1", "false", "true")

#: field -> (XEP-0004 field type, allowed values or None for free text, default)
FIELDS = MappingProxyType({
    "access_model": ("list-single", ("open", "presence", "whitelist"), "presence"),
    "max_items": ("text-single", None, "1"),
    "persist_items": ("boolean", BOOLEAN, "true"),
    "send_last_published_item": ("list-single", ("never", "on_sub", "on_sub_and_presence"),
                                 "on_sub_and_presence"),
    "deliver_notifications": ("boolean", BOOLEAN, "true"),
    "deliver_payloads": ("boolean", BOOLEAN, "true"),
    "notify_retract": ("boolean", BOOLEAN, "true"),
    "notify_delete": ("boolean", BOOLEAN, "true"),
    "publish_model": ("list-single", ("publishers",), "publishers"),
    "title": ("text-single", None, ""),
    "type": ("text-single", None, ""),
})
MAX_TEXT = 1024  # characters of a free-text value


def defaults(**overrides) -> dict:
    config = {name: default for name, (_, _, default) in FIELDS.items()}
    config.update(overrides)
    return config


def truth(value: str) -> bool:
    return value in ("1", "true")


def max_items(config: dict, cap: int) -> int:
    """The number of items a node keeps: its ``max_items``, at most ``cap``."""
    value = config.get("max_items", "1")
    return cap if value == "max" else min(int(value), cap)


def parse(x: ET.Element | None, form_type: str) -> dict:
    """The fields of a submitted form ``x`` (FORM_TYPE ``form_type``) as a config dict."""
    if x is None:
        return {}
    if x.tag != f"{{{DATA}}}x" or x.get("type") not in ("submit", None):
        raise StanzaError("bad-request", "a submitted jabber:x:data form is expected")
    values: dict = {}
    for field in x.findall(f"{{{DATA}}}field"):
        var = field.get("var") or ""
        found = [v.text or "" for v in field.findall(f"{{{DATA}}}value")]
        if var == "FORM_TYPE":
            if found != [form_type]:
                raise StanzaError("bad-request", f"FORM_TYPE must be {form_type}")
            continue
        name = var.removeprefix("pubsub#")
        if name not in FIELDS or not var.startswith("pubsub#"):
            raise StanzaError("not-acceptable", f"unsupported configuration field {var[:100]!r}")
        if len(found) != 1:
            raise StanzaError("not-acceptable", f"{var} takes one value")
        values[name] = _checked(name, found[0].strip())
    return values


def _checked(name: str, value: str) -> str:
    kind, allowed, _ = FIELDS[name]
    if name == "max_items":
        if value != "max" and not (value.isdigit() and 0 < int(value) < 2**31):
            raise StanzaError("not-acceptable", "pubsub#max_items is a positive number or 'max'")
        return value
    if allowed is not None and value not in allowed:
        raise StanzaError("not-acceptable", f"pubsub#{name} must be one of {', '.join(allowed)}")
    if kind == "boolean":
        return "true" if truth(value) else "false"
    if len(value) > MAX_TEXT:
        raise StanzaError("not-acceptable", f"pubsub#{name} is too long")
    return value


def form(config: dict) -> ET.Element:
    """The node configuration form (XEP-0060 §8.2.1) with ``config``'s values."""
    x = ET.Element(f"{{{DATA}}}x", type="form")
    _field(x, "FORM_TYPE", "hidden", NODE_CONFIG)
    for name, (kind, allowed, default) in FIELDS.items():
        field = _field(x, f"pubsub#{name}", kind, config.get(name, default))
        for option in allowed if kind == "list-single" else ():
            ET.SubElement(ET.SubElement(field, f"{{{DATA}}}option"), f"{{{DATA}}}value").text = option
    return x


def _field(x: ET.Element, var: str, kind: str, value: str) -> ET.Element:
    field = ET.SubElement(x, f"{{{DATA}}}field", var=var, type=kind)
    ET.SubElement(field, f"{{{DATA}}}value").text = value
    return field
