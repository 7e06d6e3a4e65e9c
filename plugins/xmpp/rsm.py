"""Result Set Management (XEP-0059), sans-IO: parse a request's ``<set/>``, render a page's.

``parse`` reads what a requester may say (§2.1–§2.5): ``<max/>`` (a page size, capped by the
caller's ``limit``: a huge value is not an error, it is cut to the limit, §2.1), ``<after/>`` (the
page after that item id), ``<before/>`` (the page before that id; empty: the last page, §2.5) and
``<index/>`` (skip that many items, §2.4). Anything malformed (a negative or non-numeric ``max``
or ``index``) is a :class:`RsmError`, answered ``bad-request``. ``render`` builds the answer's
``<set/>`` with ``<first index=''/>``, ``<last/>`` and ``<count/>`` (§2.1; an empty page has only
``<count/>``, §2.6).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

RSM = "http://jabber.org/protocol/rsm"
SET = f"{{{RSM}}}set"


class RsmError(ValueError):
    """The <set/> is malformed (XEP-0059 §2: answered with bad-request)."""


@dataclass(frozen=True)
class Page:
    """What a requester asked for. ``before`` is None when absent, "" for "the last page"."""

    max: int
    after: str | None = None
    before: str | None = None
    index: int | None = None


def _number(element: ET.Element, name: str) -> int | None:
    child = element.find(f"{{{RSM}}}{name}")
    if child is None:
        return None
    text = (child.text or "").strip()
    if not text.isdigit() or len(text) > 18:  # isdigit: no sign, no spaces; bounded: linear time
        raise RsmError(f"<{name}/> must be a non-negative integer")
    return int(text)


def parse(parent: ET.Element | None, default: int, limit: int) -> Page:
    """The page asked for by the ``<set/>`` child of ``parent`` (or none: ``default`` items).

    ``max`` is capped at ``limit`` (§2.1: the responder may return fewer than asked)."""
    element = parent.find(SET) if parent is not None else None
    if element is None:
        return Page(min(default, limit))
    size = _number(element, "max")
    index = _number(element, "index")
    after, before = element.find(f"{{{RSM}}}after"), element.find(f"{{{RSM}}}before")
    if after is not None and before is not None:
        raise RsmError("<after/> and <before/> cannot both be given")
    if index is not None and (after is not None or before is not None):
        raise RsmError("<index/> cannot be combined with <after/> or <before/>")
    after_id = (after.text or "").strip() if after is not None else None
    if after is not None and not after_id:
        raise RsmError("<after/> needs an item id")
    return Page(min(default if size is None else size, limit), after_id,
                (before.text or "").strip() if before is not None else None, index)


def render(first: str | None, last: str | None, index: int | None, count: int | None) -> ET.Element:
    """The response's <set/> (§2.1): ``first`` with its ``index``, ``last``, ``count``."""
    element = ET.Element(SET)
    if first is not None:
        item = ET.SubElement(element, f"{{{RSM}}}first")
        item.text = first
        if index is not None:
            item.set("index", str(index))
        ET.SubElement(element, f"{{{RSM}}}last").text = last
    if count is not None:
        ET.SubElement(element, f"{{{RSM}}}count").text = str(count)
    return element
