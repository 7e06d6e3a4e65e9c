"""RFC 3428 MESSAGE: SIP instant messages into the core router, and out to SIP bindings.

In: a MESSAGE from a local user, authenticated with digest (``407``, §22.3) as the From account,
to any address the router knows — an account here, or ``user@host`` of another domain, which the
router reaches only through a route that claims that domain (XMPP federation; with none,
``remote-server-not-found`` → 404): the MESSAGE itself is never relayed as SIP. A From of another domain gets ``403`` without a challenge (no
one can authenticate for it here). ``text/plain`` in any charset Python knows (UTF-8 by default)
and ``text/html`` (reduced to its text) are accepted, other types get ``415`` with Accept. The
message goes through ``core.send`` as a ``chat`` message (RFC 7572 §5) from the sender's binding
(so replies reach that phone): ``200`` when delivered, ``202`` when stored for later, and for a
:class:`RoutingError` the status RFC 7247 §8.1 maps its condition to (``item-not-found`` → 404 …).
RFC 7572 §4: Subject → subject, Call-ID → thread.

Out: a binding endpoint's ``deliver`` sends a MESSAGE in a client transaction (retransmitted on
UDP, Timer E/F); RFC 7572 §5: subject → Subject, thread → Call-ID (when it is a valid Call-ID),
From is the sender's AOR. An error response or a timeout is reported to the original sender
through the router as a message of type ``error`` whose condition RFC 7247 §8.2 maps from the
status (which XMPP shows as an error stanza), never for an error message itself, so failures
cannot loop. Bodies plus subjects longer than ``max_message_size`` minus ``HEADROOM`` are refused
by the router before they reach a phone (``Router.limit``).
"""
from __future__ import annotations

import codecs
import logging
import re
from functools import lru_cache
from html.parser import HTMLParser
from types import MappingProxyType
from urllib.parse import unquote

from convergence import Address, AddressError, Message, RoutingError
from convergence.addresses import normalize_domain, normalize_localpart
from convergence.router import STORED

from .message import Headers, ParseError, Request, SipUri

log = logging.getLogger(__name__)

ACCEPT = "text/plain, text/html"
#: Bytes of an outgoing MESSAGE that are not body or subject: request line, Via, From, To,
#: Call-ID, CSeq, Content-Type, Content-Length with long addresses fit in this with room to spare.
HEADROOM = 2048
#: RFC 3261 §25.1 ``callid = word [ "@" word ]``: a thread that matches becomes the Call-ID.
_WORD = r"""[\w\-.!%*+`'~()<>:\\"/\[\]?{}]+"""
CALL_ID = re.compile(f"{_WORD}(@{_WORD})?", re.ASCII)

#: RFC 7247 §8.1 (XMPP error condition → SIP response code), our reading: where the RFC gives two
#: codes we take the one that fits a MESSAGE (501, not 405; 410, as we know no new address; 491).
STATUS_OF_CONDITION = MappingProxyType({
    "bad-request": 400, "conflict": 400, "feature-not-implemented": 501, "forbidden": 403,
    "gone": 410, "internal-server-error": 500, "item-not-found": 404, "jid-malformed": 400,
    "not-acceptable": 406, "not-allowed": 403, "not-authorized": 401, "policy-violation": 403,
    "recipient-unavailable": 480, "redirect": 302, "registration-required": 400,
    "remote-server-not-found": 404, "remote-server-timeout": 408, "resource-constraint": 500,
    "service-unavailable": 503, "subscription-required": 400, "undefined-condition": 400,
    "unexpected-request": 491,
})

#: RFC 7247 §8.2 (SIP response code → XMPP error condition), then by class for other codes;
#: our reading of the RFC (the text was not at hand to check line by line: see docs/sip.md).
CONDITION_OF_STATUS = MappingProxyType({
    400: "bad-request", 401: "not-authorized", 402: "bad-request", 403: "forbidden",
    404: "item-not-found", 405: "feature-not-implemented", 406: "not-acceptable",
    407: "not-authorized", 408: "remote-server-timeout", 410: "gone",
    413: "policy-violation", 414: "jid-malformed", 415: "not-acceptable", 416: "jid-malformed",
    420: "feature-not-implemented", 421: "not-acceptable", 423: "resource-constraint",
    430: "recipient-unavailable", 433: "not-allowed", 480: "recipient-unavailable",
    481: "item-not-found", 482: "not-acceptable", 483: "not-acceptable", 484: "item-not-found",
    485: "item-not-found", 486: "recipient-unavailable", 487: "service-unavailable",
    488: "not-acceptable", 489: "policy-violation", 491: "unexpected-request",
    493: "service-unavailable", 494: "policy-violation",
    500: "internal-server-error", 501: "feature-not-implemented", 502: "remote-server-not-found",
    503: "service-unavailable", 504: "remote-server-timeout", 505: "not-acceptable",
    513: "policy-violation",
    600: "service-unavailable", 603: "service-unavailable", 604: "item-not-found",
    606: "not-acceptable",
})
CONDITION_OF_CLASS = MappingProxyType({3: "redirect", 4: "bad-request",
                                       5: "internal-server-error", 6: "service-unavailable"})


class _TextOfHtml(HTMLParser):
    """The text of an HTML body: tags dropped, line breaks where blocks end."""

    BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def body_text(content_type: str | None, body: bytes) -> str:
    """The text of a MESSAGE body; ParseError 415/400 when it is not text we read."""
    media, *params = (content_type or "text/plain").split(";")
    media = media.strip().lower()
    if media not in ("text/plain", "text/html"):
        raise ParseError(415, "Unsupported Media Type")
    charset = "utf-8"
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"')
    try:
        codecs.lookup(charset)
    except LookupError:
        raise ParseError(415, f"Unsupported charset {charset}") from None
    try:
        text = body.decode(charset)
    except UnicodeDecodeError:
        raise ParseError(400, f"Body is not valid {charset}") from None
    return html_to_text(text) if media == "text/html" else text


def condition_of_status(status: int) -> str:
    """RFC 7247 §8.2: the XMPP error condition for a SIP failure response (or a timeout, 408)."""
    return CONDITION_OF_STATUS.get(status) or CONDITION_OF_CLASS[min(status // 100, 6)]


@lru_cache(maxsize=1024)  # addresses are frozen; the same few send and receive
def _aor(address) -> str:
    """The SIP URI of an address's account (From and To of an outgoing MESSAGE)."""
    return address.bare.sip_uri


class Messaging:
    """MESSAGE for one server: in through ``handle``, out through ``send`` (a binding's
    ``deliver``). ``host`` names this server in the Call-IDs it makes."""

    def __init__(self, core, max_message_size: int, transactions, auth, location, host: str):
        self.core, self.transactions, self.auth, self.location = core, transactions, auth, location
        self.host = host
        core.router.limit("sip", max_message_size - HEADROOM)
        self._recipient = lru_cache(maxsize=1024)(self._address_of)  # the same few Request-URIs

    def _address_of(self, uri: str):
        """The address a MESSAGE's Request-URI names (AddressError if none): an account of this
        domain when the host is one of our names, else ``user@host`` of another (RFC 7247 §5.2)."""
        parsed = SipUri.parse(uri)
        if parsed.host in self.location.hosts:
            return self.core.address(unquote(parsed.user or ""))
        if parsed.user is None:
            raise AddressError(f"{uri!r} names no user")
        return Address(normalize_localpart(unquote(parsed.user)), normalize_domain(parsed.host))

    # -- in --
    def handle(self, st) -> None:
        request, core, location = st.request, self.core, self.location
        if st.unsupported("Require"):
            return
        sender = location.account_of(request.from_.uri)
        if sender is None:  # another domain (no federation): nobody can authenticate for it
            return st.respond(403, "From is not an address of this domain")  # here, no 407
        user = self.auth.authenticate(st, proxy=True)
        if user is None:
            return
        if sender != user:
            return st.respond(403, "From is not the authenticated user")
        try:
            recipient = self._recipient(request.uri)
        except AddressError:
            return st.respond(404, "No such user")
        try:
            text = body_text(request.content_type, request.body)
        except ParseError as err:
            return st.respond(err.status, err.reason,
                              headers=[("Accept", ACCEPT)] if err.status == 415 else ())
        binding = location.binding_on(user, st.flow)
        sender = binding.address if binding else core.address(user)
        message = Message(sender, recipient, text, subject=request.headers.get("Subject"),
                          thread=request.call_id, type="chat")
        try:
            outcome = core.send(message, "sip")
        except RoutingError as err:
            if err.retry_after is not None:  # temporary (a cluster without Redis): RFC 3261 §21.5.4
                return st.respond(503, err.text, headers=[("Retry-After", str(round(err.retry_after)))])
            return st.respond(STATUS_OF_CONDITION.get(err.condition, 500), err.text)
        st.respond(202 if outcome == STORED else 200)

    # -- out --
    def send(self, endpoint, message: Message) -> None:
        """MESSAGE ``message`` to a binding; failures come back to the sender as errors.

        A message without text (an XMPP typing notice, XEP-0085) is not sent: a phone would show
        an empty message. RFC 3994 isComposing is not used instead: the stock phones we test
        (baresip, sipsak, linphonec) do not render it, and XEP-0085 states do not map onto its
        refresh/idle model one to one."""
        if not message.has_text:
            return
        transactions = self.transactions
        flow = self.location.flow_for(endpoint)
        if flow is None:
            raise RoutingError("recipient-unavailable", f"no way to reach {endpoint.uri}")
        headers = Headers([
            ("Max-Forwards", "70"),
            ("From", f"<{_aor(message.sender)}>;tag={transactions.new_id()}"),
            ("To", f"<{_aor(endpoint.address)}>"),
            ("Call-ID", message.thread if message.thread and CALL_ID.fullmatch(message.thread)
                        else f"{transactions.new_id()}@{self.host}"),
            ("CSeq", "1 MESSAGE"),
            ("Content-Type", "text/plain;charset=UTF-8"),
        ])
        if message.subject:
            headers.add("Subject", message.subject)
        request = Request("MESSAGE", endpoint.uri, headers, message.body.encode())
        transactions.send_request(request, flow,
                                  lambda response: self._outcome(endpoint, message, response))

    def _outcome(self, endpoint, message: Message, response) -> None:
        if response.status < 300:
            return
        problem = f"{response.status} {response.reason}".strip()
        if message.type == "error":
            log.info("SIP: error message to %s not delivered: %s", endpoint.uri, problem)
            return
        report = message.failed(condition_of_status(response.status),
                                f"Message not delivered to {endpoint.address.bare}: {problem}")
        try:
            self.core.send(report, "sip")
        except RoutingError as err:
            log.info("SIP: cannot report a failed MESSAGE to %s: %s", message.sender, err)
