"""HTTP File Upload (XEP-0363) as a client does it: a slot over XMPP (the conftest ``Client``,
slixmpp), then PUT and GET with urllib (slixmpp's own xep_0363 needs aiohttp, which the test
environment lacks). The slot request is sent as raw XML, so a test says exactly the §4 bytes."""
from __future__ import annotations

import urllib.error
import urllib.request
from xml.sax.saxutils import quoteattr

from .roster_client import iq

NS = "urn:xmpp:http:upload:0"


def request_slot(client, filename: str, size, content_type: str | None = "image/png"):
    """(put url, put headers, get url) of a §4 slot request; IqError when refused."""
    attrs = f" filename={quoteattr(filename)} size={quoteattr(str(size))}"
    attrs += f" content-type={quoteattr(content_type)}" if content_type else ""
    slot = iq(client, f"<request xmlns='{NS}'{attrs}/>", to="example.org").xml.find(f"{{{NS}}}slot")
    put = slot.find(f"{{{NS}}}put")
    headers = {h.get("name"): h.text for h in put.findall(f"{{{NS}}}header")}
    return put.get("url"), headers, slot.find(f"{{{NS}}}get").get("url")


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request; error statuses are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def put(url: str, body: bytes, headers: dict, content_type: str = "image/png") -> int:
    return http("PUT", url, body, {**headers, "Content-Type": content_type})[0]
