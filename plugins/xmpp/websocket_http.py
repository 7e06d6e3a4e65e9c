"""The XMPP plugin's pages on the HTTP listener: ``/xmpp-websocket`` (RFC 7395) and XEP-0156
discovery (``/.well-known/host-meta``, ``/.well-known/host-meta.json``).

The XMPP plugin hands the HTTP plugin a Flask blueprint through the ``add_blueprints`` hook
(``XmppServer.add_blueprints``); neither plugin imports the other. A WebSocket upgrade is checked
by ``websocket.handshake``; the ``101`` goes out through the WSGI server, and
``environ["convergence.upgraded"]`` has ``HTTPHandler`` (``convergence.listeners``) read no
further request but, once the WSGI call returned, run ``transport.serve_websocket`` on the
connection's socket (``environ["convergence.socket"]``) in the handler's greenlet until the
session ends. The connection counts against ``[http] max_connections_per_address`` all that time.

Whether a WebSocket session counts as encrypted (so that, with ``[xmpp] require_tls``, it may log
in): when its TCP peer is in ``[xmpp] websocket_secure_from`` (by default loopback, where a
reverse proxy terminating ``wss://`` connects from) or the request came over HTTPS.
"""
from __future__ import annotations

import json

from flask import Blueprint, Response, request
from markupsafe import escape

from convergence.listeners import address_in

from . import transport
from .websocket import ALT_CONNECTION, PATH, HandshakeError, handshake

XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"


class Upgrade(Response):
    """The ``101`` answer; calling it (the WSGI server does) sends it and leaves the WebSocket
    session to the handler (``convergence.upgraded``)."""

    def __init__(self, service, websockets, fields: list[tuple[str, str]], sock, peer,
                 encrypted: bool):
        super().__init__(status=101)
        self.service, self.websockets, self.fields = service, websockets, fields
        self.sock, self.peer, self.encrypted = sock, peer, encrypted

    def __call__(self, environ, start_response):
        write = start_response("101 Switching Protocols", self.fields)
        write(b"")  # the status line and header fields go out now, before any frame
        environ["convergence.upgraded"] = lambda: transport.serve_websocket(
            self.service, self.sock, self.peer, self.encrypted, self.websockets)
        return []


def websocket_url(service) -> str:
    """The URL XEP-0156 advertises: ``[xmpp] websocket_url``, or this request's host and scheme."""
    configured = service.settings["websocket_url"]
    if configured:
        return configured
    scheme = "wss" if request.scheme == "https" else "ws"
    return f"{scheme}://{request.host}{PATH}"


def blueprint(service, websockets: transport.OpenConnections) -> Blueprint:
    """The pages for one XMPP service (one per core); ``websockets`` counts its open WebSockets."""
    pages = Blueprint("xmpp_websocket", __name__)

    @pages.get(PATH, websocket=True)  # werkzeug routes an Upgrade: websocket request only here
    @pages.get(PATH, endpoint="not_websocket")  # and any other request here (426)
    def websocket():
        try:
            fields = handshake(request.headers)
        except HandshakeError as exc:
            return Response(exc.text + "\n", exc.status, exc.headers, mimetype="text/plain")
        sock = request.environ.get("convergence.socket")
        if sock is None:  # not under the server's own WSGI handler
            return Response("WebSocket needs the server's HTTP listener\n", 501, mimetype="text/plain")
        peer = (request.environ.get("REMOTE_ADDR", ""), int(request.environ.get("REMOTE_PORT") or 0))
        encrypted = request.scheme == "https" or address_in(peer[0],
                                                            service.settings["websocket_secure_from"])
        return Upgrade(service, websockets, fields, sock, peer, encrypted)

    @pages.get("/.well-known/host-meta")
    def host_meta():
        """XEP-0156 §3.2: the XRD document (RFC 6415) with the WebSocket endpoint."""
        body = (f"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='{XRD_NS}'>\n"
                f"  <Link rel='{ALT_CONNECTION}' href='{escape(websocket_url(service))}'/>\n</XRD>\n")
        return Response(body, 200, {"Access-Control-Allow-Origin": "*"},
                        mimetype="application/xrd+xml")

    @pages.get("/.well-known/host-meta.json")
    def host_meta_json():
        """XEP-0156 §3.2: the JRD form (RFC 6415 Appendix A)."""
        body = json.dumps({"links": [{"rel": ALT_CONNECTION, "href": websocket_url(service)}]})
        return Response(body + "\n", 200, {"Access-Control-Allow-Origin": "*"},
                        mimetype="application/json")

    return pages
