"""ExposeURL: the original sample's HTTP trigger (research/seed.md §1.3), fixed where it had gaps.

``GET`` or ``POST /convergence/ExposeURL`` makes the HTTP user (``[http] user``) available — it
stays so until shutdown — and sends it a chat message ``[http] expose_text`` to every account that
is online (through whatever it is connected with: XMPP resources, SIP phones, HTTP streams).
Service users (echo, the HTTP user itself) are not accounts and get nothing. The answer is an
HTML page listing each recipient; with nobody online it says so (the original answered an empty
body), and a recipient the router refused is listed with the RFC 6120 condition.
"""
from __future__ import annotations

import logging
from html import escape

from flask import Blueprint, current_app

from convergence import Address, Message, Presence, RoutingError

log = logging.getLogger(__name__)

blueprint = Blueprint("expose", __name__)


def http_user(core) -> Address:
    """The HTTP service user's address, ``[http] user`` @ domain."""
    return core.address(core.config["http"]["user"])


def online_accounts(core) -> list[Address]:
    """Accounts with a live endpoint, by JID; service users have none."""
    return sorted((a for a in core.presence.online() if core.presence.endpoints(a)), key=str)


def page(sent: list[Address], refused: list[tuple[Address, str]]) -> str:
    """The HTML answer: one line per recipient, or a clear word that nobody was online."""
    lines = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>ThreeProtocolCommunication</title>",
             "<style>body{font-family:sans-serif;margin:2em;line-height:1.5}</style>",
             "</head><body>", "<h1>ThreeProtocolCommunication</h1>"]
    if sent:
        lines.append("<p>Sent message to:<br>")
        lines += [f"{escape(str(jid))}<br>" for jid in sent]
        lines.append("</p>")
    if refused:
        lines.append("<p>Could not send to:<br>")
        lines += [f"{escape(str(jid))} ({escape(condition)})<br>" for jid, condition in refused]
        lines.append("</p>")
    if not sent and not refused:
        lines.append("<p>Nobody is online: no message was sent.</p>")
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


@blueprint.route("/convergence/ExposeURL", methods=["GET", "POST"])
def expose():
    core = current_app.extensions["convergence"]
    sender = http_user(core)
    core.presence.set_service(sender, Presence())
    text = core.config["http"]["expose_text"]
    sent, refused = [], []
    for account in online_accounts(core):
        if account == sender:  # an account of the same name is shadowed by the service user
            continue
        try:
            core.send(Message(sender, account, text, type="chat"), "service")
            sent.append(account)
        except RoutingError as exc:
            log.info("ExposeURL message to %s refused: %s", account, exc)
            refused.append((account, exc.condition))
    return page(sent, refused), {"Content-Type": "text/html; charset=utf-8"}
