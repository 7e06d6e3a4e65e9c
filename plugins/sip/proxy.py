"""Stateful proxy for calls between users registered here (RFC 3261 §16).

- Initial requests (INVITE, OPTIONS, INFO, UPDATE, BYE... to ``user@<domain>``): a From naming a
  local user must be proven with digest (``407``, §22.3; ``403`` for someone else's From), requests
  from other domains to local users are taken as they come; ``404`` for an
  unknown account, ``480`` when it has no binding; else one branch per binding, in parallel
  (forking, highest q first), each with Record-Route (§16.6 step 4), Max-Forwards decremented and
  a Via whose branch carries a hash of the request for loop detection (§16.3 step 4 → ``482``).
  An INVITE is answered ``100 Trying`` at once (§16.2).
- Responses (§16.7): provisional ones (not 100) go upstream; every 2xx goes upstream at once and,
  for an INVITE, CANCELs the other branches (§16.7 step 10; a branch that has not answered
  provisionally yet is cancelled when it does, §9.1); a 6xx cancels the others too. When every
  branch has a final response and none was 2xx, the best one goes up (§16.7 step 6: a 6xx, else
  the lowest class, 401/407/415/420/484 first; 503 becomes 500). Timeouts count as 408.
- In-dialog and routed requests: our Route entries are removed (§16.4) and the request goes to
  the next Route, else the Request-URI; a registered contact is reached over the flow it
  registered from. ACKs of 2xx and responses without a transaction are forwarded statelessly
  (§16.11, §16.7 step 2 with RFC 6026).
- A CANCEL (§16.10) is answered by the dispatcher and cancels every pending branch here.

Decision logic only: requests go out in client transactions of the transaction layer
(``transactions``), bindings and their flows come from the location service (``location``), and
stateless forwards through ``flows`` (the transport). ``names`` is what this server is called
(the host and port of its Via and Record-Route, and which Route entries name it).
"""
from __future__ import annotations

import hashlib

from convergence.store import accounts

from .dispatcher import OUR_BRANCH
from .message import Headers, NameAddr, ParseError, Request, Response, SipUri, Via

PREFERRED = (401, 407, 415, 420, 484)  # §16.7 step 6


class Branch:
    __slots__ = ("ct", "response", "provisional", "cancel_pending")

    def __init__(self):
        self.ct = self.response = None
        self.provisional = self.cancel_pending = False


class Context:
    """The response context of one proxied request (§16.2)."""

    __slots__ = ("st", "branches", "answered")

    def __init__(self, st):
        self.st, self.branches, self.answered = st, [], False


def loop_hash(request: Request) -> str:
    """§16.6 step 8: what identifies the request as received, for loop detection."""
    key = "\n".join((request.uri, request.headers.get("From", ""), request.headers.get("To", ""),
                     request.call_id, request.headers.get("CSeq", ""),
                     ",".join(request.headers.get_all("Proxy-Require"))))
    return hashlib.blake2s(key.encode(), digest_size=4).hexdigest()


def best_response(responses: list[Response]) -> Response:
    """§16.7 step 6."""
    def rank(response):
        kind = response.status // 100
        return kind != 6, kind, response.status not in PREFERRED
    return min(responses, key=rank)


def upstream(response: Response) -> Response:
    """The response without our Via (§16.7 step 3)."""
    headers = Headers(list(response.headers))
    headers.pop("Via")
    return Response(response.status, response.reason, headers, response.body)


class Proxy:
    def __init__(self, db, transactions, auth, location, flows, names):
        self.db, self.transactions, self.auth, self.location = db, transactions, auth, location
        self.flows, self.names = flows, names
        self.record_route = f"<sip:{names.host}:{names.port};lr>"

    def names_us(self, route: str) -> bool:
        """Whether a Route value is this proxy's URI (Record-Route we inserted, or preloaded)."""
        try:
            return self.names.is_ours(SipUri.parse(NameAddr.parse(route).uri))
        except ParseError:
            return False

    def looped(self, st) -> bool:
        """§16.3 step 4: one of our Vias carries this very request's hash → 482."""
        mark = f"-cv{loop_hash(st.request)}."
        if any(mark in via for via in st.request.headers.get_all("Via")):
            st.respond(482)
            return True
        return False

    def _checked(self, st) -> bool:
        """§16.3 steps 3, 4 and 6 for a request about to be forwarded."""
        if st.request.max_forwards == 0:
            st.respond(483)
            return False
        return not (st.unsupported("Proxy-Require") or self.looped(st))

    # -- requests --
    def route(self, st) -> None:
        """An initial request to ``user@<domain>``: fork to the user's bindings (§16.5, §16.6)."""
        request = st.request
        if not self._checked(st):
            return
        location = self.location
        sender = location.account_of(request.from_.uri)
        if sender is not None:  # a local user: prove it (407), as Kamailio's default script
            user = self.auth.authenticate(st, proxy=True)
            if user is None:
                return
            if user != sender:
                return st.respond(403, "From is not the authenticated user")
        name = location.account_of(request.uri)
        if name is None:
            return st.respond(404)
        targets = location.contacts(name)
        if not targets:
            if accounts.exists(self.db, name):
                return st.respond(480, "Temporarily Unavailable (not registered)")
            return st.respond(404)
        if request.method == "INVITE":
            st.respond(100)
        context = st.context = Context(st)
        for endpoint in targets:
            flow = location.flow_for(endpoint)
            if flow is not None:
                self._fork(context, endpoint.uri, flow, record_route=True)
        if not context.branches:
            st.respond(480, "Temporarily Unavailable (no reachable binding)")

    def relay(self, st) -> None:
        """A request routed through us (in a dialog we record-routed): to the next hop."""
        if not self._checked(st):
            return
        flow = self._next_hop(st.request)
        if flow is None:
            return st.respond(404, "No route to the Request-URI")
        if st.request.method == "INVITE":
            st.respond(100)
        st.context = Context(st)
        self._fork(st.context, st.request.uri, flow, record_route=False)

    def ack(self, request: Request) -> None:
        """An ACK with no transaction here (for a 2xx): forwarded statelessly (§16.11)."""
        routed = False
        while (route := request.headers.get("Route")) is not None and self.names_us(route):
            request.headers.pop("Route")
            routed = True
        if not routed or request.max_forwards == 0:
            return  # not for a dialog we are in: nothing to do
        flow = self._next_hop(request)
        if flow is not None:
            request.headers.set("Max-Forwards", str((request.max_forwards or 70) - 1))
            branch = self.transactions.new_branch(loop_hash(request))
            request.headers.prepend(
                "Via", f"SIP/2.0/{flow.transport} {self.names.host}:{self.names.port}"
                       f";branch={branch}")
            flow.send(bytes(request))

    def cancel(self, st) -> None:
        """A CANCEL for a proxied INVITE (§16.10): cancel every pending branch."""
        for branch in st.context.branches:
            self._cancel(branch)

    def _next_hop(self, request: Request):
        route = request.headers.get("Route")
        try:
            target = NameAddr.parse(route).uri if route else request.uri
        except ParseError:
            return None
        endpoint = self.location.by_uri.get(target)
        if endpoint is not None:
            return self.location.flow_for(endpoint)
        return self.location.target_flow(target)

    def _fork(self, context: Context, uri: str, flow, record_route: bool) -> None:
        """§16.6: copy, retarget, Max-Forwards, Record-Route, Via; send in its own transaction."""
        request = context.st.request
        headers = Headers(list(request.headers))
        max_forwards = request.max_forwards
        headers.set("Max-Forwards", str(69 if max_forwards is None else max_forwards - 1))
        if record_route:
            headers.prepend("Record-Route", self.record_route)
        branch = Branch()
        context.branches.append(branch)
        branch.ct = self.transactions.send_request(
            Request(request.method, uri, headers, request.body), flow,
            lambda response: self._response(context, branch, response), loop_hash(request))

    # -- responses --
    def _response(self, context: Context, branch: Branch, response: Response) -> None:
        st, status = context.st, response.status
        if status < 200:
            branch.provisional = True
            if branch.cancel_pending:
                branch.cancel_pending = False
                self.transactions.cancel(branch.ct)
            if status > 100 and not st.answered:
                st.send(upstream(response))
            return
        if 200 <= status < 300:  # every 2xx goes up (§16.7 step 5), retransmissions too
            branch.response = response
            st.send(upstream(response))
            if not context.answered:
                context.answered = True
                if st.request.method == "INVITE":
                    self._cancel_others(context, branch)
            return
        if branch.response is not None:
            return
        branch.response = response
        if status >= 600:
            self._cancel_others(context, branch)
        if not context.answered and all(b.response is not None for b in context.branches):
            best = upstream(best_response([b.response for b in context.branches]))
            if best.status == 503:
                best.status, best.reason = 500, "Server Internal Error"
            st.send(best)

    def _cancel_others(self, context: Context, chosen: Branch) -> None:
        for branch in context.branches:
            if branch is not chosen:
                self._cancel(branch)

    def _cancel(self, branch: Branch) -> None:
        if branch.response is not None or branch.ct.request.method != "INVITE":
            return
        if branch.provisional:
            self.transactions.cancel(branch.ct)
        else:
            branch.cancel_pending = True  # §9.1: not before a provisional response

    def stray_response(self, response: Response, via: Via) -> None:
        """A response matching no transaction: if it carries our Via, pass it on statelessly
        to the next Via (a 2xx retransmission after the transaction ended)."""
        if not (via.branch or "").startswith(OUR_BRANCH):
            return
        headers = Headers(list(response.headers))
        headers.pop("Via")
        top = headers.get("Via")
        if top is None:
            return
        try:
            next_via = Via.parse(top)
        except ParseError:
            return
        host = next_via.received or next_via.host
        flow = self.flows.flow(next_via.transport, host.strip("[]"),
                               next_via.rport or next_via.port)
        if flow is not None:
            flow.send(bytes(Response(response.status, response.reason, headers, response.body)))
