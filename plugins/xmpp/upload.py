"""HTTP File Upload (XEP-0363 v1.1, ``urn:xmpp:http:upload:0``), the XMPP half: slot requests.

The server's own JID is the upload service: its disco#info carries the ``store/file`` identity,
the feature and the max-file-size form (§2), which Conversations, Gajim, Dino and slixmpp look for
in the server's disco#info as well as in its items'. It is offered only while the HTTP plugin runs
(it serves the PUT and GET and owns the slots: ``plugins/http/uploads.py``, reached through its
object ``http:server``; the plugins import nothing of each other).

A ``<request filename= size= content-type=/>`` (§4) is answered with ``<slot><put url=…><header
name='Authorization'>Bearer …</header></put><get url=…/></slot>``. Refusals (§4): a size over
``[xmpp] upload_max_size`` is ``not-acceptable`` with ``<file-too-large><max-file-size/>``; one
that would take the account over ``upload_quota`` bytes (files kept plus open slots)
``resource-constraint``; a content type outside ``upload_content_types`` (when set)
``not-acceptable``; a missing file name, a size that is not a positive integer or a malformed
content type ``bad-request``. A slot can be used for ``upload_slot_timeout`` seconds; the file is
kept ``upload_expiry`` days (0: until deleted).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from .stanzas import StanzaError, iq_result, tag

NS = "urn:xmpp:http:upload:0"
DATA = "jabber:x:data"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
MAX_FILENAME = 1024  # characters of the requested file name (the URL keeps a sanitised 100)
SIZE = re.compile(r"[0-9]{1,19}")
#: type/subtype (RFC 9110 §8.3.1 tokens); ``PARAMETERS`` may follow in a request (``; charset=…``).
MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}")
PARAMETERS = re.compile(r"(\s*;\s*[A-Za-z0-9!#$&^_.+-]{1,127}=[A-Za-z0-9!#$&^_.+\-\"]{1,127})*")


def uploads(service):
    """The HTTP plugin's upload slots, or None when that plugin is not running."""
    http = service.core.pm.get_plugin("http:server")
    return getattr(http, "uploads", None)


def register_iq(router) -> None:
    router.register(tag("request", NS), request_slot, features=(NS,),
                    offered=lambda service: uploads(service) is not None)
    router.server_info(service_info)


def service_info(service) -> list[ET.Element]:
    """The ``store/file`` identity and the §2 form with max-file-size, while uploads are offered."""
    if uploads(service) is None:
        return []
    identity = ET.Element(tag("identity", DISCO_INFO), category="store", type="file",
                          name="HTTP File Upload")
    form = ET.Element(tag("x", DATA), type="result")
    for var, value in (("FORM_TYPE", NS), ("max-file-size", str(service.settings["upload_max_size"]))):
        field = ET.SubElement(form, tag("field", DATA), var=var)
        if var == "FORM_TYPE":
            field.set("type", "hidden")
        ET.SubElement(field, tag("value", DATA)).text = value
    return [identity, form]


def too_large(limit: int) -> StanzaError:
    app = ET.Element(tag("file-too-large", NS))
    ET.SubElement(app, tag("max-file-size", NS)).text = str(limit)
    return StanzaError("not-acceptable", f"the file is larger than the largest allowed, {limit} "
                       "bytes", app=app)


def parse_request(request: ET.Element) -> tuple[str, int, str | None]:
    """(filename, size, content type or None) of a §4 request, or StanzaError bad-request."""
    filename, size = request.get("filename") or "", request.get("size") or ""
    content_type = request.get("content-type")
    if not filename.strip() or len(filename) > MAX_FILENAME:
        raise StanzaError("bad-request", f"a file name of 1 to {MAX_FILENAME} characters is required")
    if not SIZE.fullmatch(size) or int(size) == 0:
        raise StanzaError("bad-request", "the size must be a positive number of bytes")
    if content_type is not None:
        kind, semicolon, parameters = content_type.strip().partition(";")
        if not MEDIA_TYPE.fullmatch(kind.strip()) or not PARAMETERS.fullmatch(semicolon + parameters):
            raise StanzaError("bad-request", "the content type must be a media type like image/png")
    return filename, int(size), content_type.strip().lower() if content_type else None


def request_slot(service, session, iq: ET.Element) -> ET.Element:
    if iq.get("type") != "get":
        raise StanzaError("bad-request", "a slot is requested with an IQ of type get (§4)")
    store = uploads(service)
    if store is None:
        raise StanzaError("service-unavailable", "HTTP File Upload needs the HTTP plugin")
    settings = service.settings
    filename, size, content_type = parse_request(iq[0])
    if size > settings["upload_max_size"]:
        raise too_large(settings["upload_max_size"])
    allowed = settings["upload_content_types"]
    if allowed and (content_type or "application/octet-stream").split(";")[0].strip() not in allowed:
        raise StanzaError("not-acceptable", "files of this content type are not accepted here; "
                          "allowed: " + ", ".join(allowed))
    slot = store.slot(session.account.local, filename, size, content_type,
                      quota=settings["upload_quota"], slot_timeout=settings["upload_slot_timeout"],
                      keep_seconds=round(settings["upload_expiry"] * 86400))
    if slot is None:
        raise StanzaError("resource-constraint", f"upload quota reached: an account keeps at most "
                          f"{settings['upload_quota']} bytes of files")
    element = ET.Element(tag("slot", NS))
    put = ET.SubElement(element, tag("put", NS), url=slot.put)
    for name, value in slot.headers:
        ET.SubElement(put, tag("header", NS), name=name).text = value
    ET.SubElement(element, tag("get", NS), url=slot.get)
    return iq_result(iq, element)
