"""The stateful proxy (RFC 3261 §16) with raw user agents on loopback UDP."""
import pytest

from convergence.plugins.sip.message import Headers, Request, make_response

DOMAIN = "example.com"  # tests/sip/conftest.py's
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 9 RTP/AVP 0\r\n")


@pytest.fixture
def proxy(sip_server):
    server = sip_server()
    server.core.add_account("bob", "hunter2")
    server.core.add_account("alice", "secret")
    return server


def invite(caller, to="bob", **options):
    """An INVITE from a user of another domain (no digest asked), to ``to@example.com``."""
    contact = f"<sip:carol@{caller.host}:{caller.port}>"
    request = caller.request("INVITE", uri=f"sip:{to}@{DOMAIN}", to=f"<sip:{to}@{DOMAIN}>",
                             body=SDP, headers=[("Content-Type", "application/sdp"),
                                                ("Contact", contact)], **options)
    request.headers.set("From", f"<sip:carol@example.net>;tag={caller.tag}")
    return request


def incoming(client, method):
    while True:
        message = client.recv()
        assert message is not None, f"no {method}"
        if getattr(message, "method", None) == method:
            return message


def respond(client, request, status, tag="callee", body=b""):
    response = make_response(request, status, to_tag=tag)
    if request.method == "INVITE" and status < 300:
        for route in request.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", route)
        response.headers.add("Contact", f"<sip:bob@{client.host}:{client.port}>")
    response.body = body
    client.send(response)
    return response


def in_dialog(caller, method, ok, cseq):
    """ACK/BYE for the dialog a 2xx set up: to its Contact, through its Record-Route (§12.2)."""
    via = f"SIP/2.0/UDP {caller.host}:{caller.port};branch=z9hG4bK{method}{cseq}"
    headers = Headers([("Via", via),
                       ("Max-Forwards", "70"), ("From", ok.headers.get("From")),
                       ("To", ok.headers.get("To")), ("Call-ID", ok.call_id),
                       ("CSeq", f"{cseq} {method}")])
    for route in reversed(ok.headers.get_all("Record-Route")):
        headers.add("Route", route)
    return Request(method, ok.contacts[0].uri, headers)


def test_unknown_and_unregistered_callees(proxy):
    caller = proxy.client()
    assert caller.ask(invite(caller, to="nobody")).status == 404
    assert caller.ask(invite(caller, to="bob")).status == 480


def test_local_callers_must_authenticate(proxy):
    caller = proxy.client()
    bob = proxy.client()
    assert bob.register("bob", "hunter2").status == 200
    request = caller.request("INVITE", uri=f"sip:bob@{DOMAIN}", to=f"<sip:bob@{DOMAIN}>", body=SDP)
    challenge = caller.ask(request)
    assert challenge.status == 407
    forged = caller.authorize(request, challenge, "bob", "hunter2")  # From alice, creds bob
    assert caller.ask(forged).status == 403


def test_forked_call_answered_on_one_branch_cancels_the_other(proxy):
    caller, phone, laptop = proxy.client(), proxy.client(), proxy.client()
    assert phone.register("bob", "hunter2", headers=()).status == 200
    assert laptop.register("bob", "hunter2").status == 200
    request = invite(caller)
    caller.send(request)
    assert caller.recv_for(request).status == 100
    on_phone, on_laptop = incoming(phone, "INVITE"), incoming(laptop, "INVITE")
    for branch in (on_phone, on_laptop):
        assert branch.headers.get("Max-Forwards") == "69"
        assert branch.headers.get("Record-Route") == f"<sip:127.0.0.1:{proxy.port};lr>"
        assert len(branch.via) == 2 and branch.body == SDP
    respond(phone, on_phone, 180, tag="phone")
    assert caller.recv_for(request).status == 180
    respond(laptop, on_laptop, 200, tag="laptop", body=SDP)
    ok = caller.final(request)
    assert ok.status == 200 and ok.to.tag == "laptop" and len(ok.via) == 1
    cancel = incoming(phone, "CANCEL")  # §16.7 step 10: the other branch is cancelled
    respond(phone, cancel, 200, tag="phone")
    respond(phone, on_phone, 487, tag="phone")
    assert incoming(phone, "ACK").headers.get("CSeq").endswith("ACK")  # the proxy ACKs the 487
    caller.send(in_dialog(caller, "ACK", ok, ok.cseq.number))
    ack = incoming(laptop, "ACK")
    assert ack.uri == f"sip:bob@{laptop.host}:{laptop.port}" and "Route" not in ack.headers
    bye = in_dialog(caller, "BYE", ok, ok.cseq.number + 1)
    caller.send(bye)
    respond(laptop, incoming(laptop, "BYE"), 200, tag="laptop")
    assert caller.final(bye).status == 200


@pytest.mark.parametrize("answers, best", [((486, 503), 486), ((404, 603), 603),
                                           ((503, 503), 500), ((302, 486), 302)])
def test_best_response_when_every_branch_fails(proxy, answers, best):
    caller, first, second = proxy.client(), proxy.client(), proxy.client()
    for phone in (first, second):
        assert phone.register("bob", "hunter2").status == 200
    request = invite(caller)
    caller.send(request)
    for phone, status in zip((first, second), answers):
        respond(phone, incoming(phone, "INVITE"), status)
    assert caller.final(request).status == best


def test_caller_cancels(proxy):
    caller, phone = proxy.client(), proxy.client()
    assert phone.register("bob", "hunter2").status == 200
    request = invite(caller)
    caller.send(request)
    on_phone = incoming(phone, "INVITE")
    respond(phone, on_phone, 180)
    assert caller.recv_for(request).status in (100, 180)
    cancel = Request("CANCEL", request.uri, Headers(
        [(n, request.headers.get(n)) for n in ("Via", "From", "To", "Call-ID")]
        + [("CSeq", f"{request.cseq.number} CANCEL"), ("Max-Forwards", "70")]))
    assert caller.ask(cancel).status == 200
    respond(phone, incoming(phone, "CANCEL"), 200)
    respond(phone, on_phone, 487)
    assert caller.final(request).status == 487


def test_loop_is_detected(proxy):
    caller, bob = proxy.client(), proxy.client()
    # bob's contact is the proxy itself: the request comes back with the same Request-URI
    assert bob.register("bob", "hunter2", contact=f"<sip:bob@127.0.0.1:{proxy.port}>").status == 200
    request = invite(caller)
    assert caller.ask(request).status == 482


def test_max_forwards_zero_on_invite(proxy):
    caller = proxy.client()
    request = invite(caller)
    request.headers.set("Max-Forwards", "0")
    assert caller.ask(request).status == 483


def test_in_dialog_requests_both_ways(proxy):
    """re-INVITE and INFO from the caller, INFO and BYE from the callee, through Record-Route."""
    caller, phone = proxy.client(), proxy.client()
    assert phone.register("bob", "hunter2").status == 200
    request = invite(caller)
    caller.send(request)
    respond(phone, incoming(phone, "INVITE"), 200, tag="phone", body=SDP)
    ok = caller.final(request)
    caller.send(in_dialog(caller, "ACK", ok, 1))
    incoming(phone, "ACK")
    for method, cseq in (("INVITE", 2), ("INFO", 3)):  # re-INVITE, INFO: routed to the phone
        again = in_dialog(caller, method, ok, cseq)
        again.headers.add("Contact", f"<sip:carol@{caller.host}:{caller.port}>")
        caller.send(again)
        got = incoming(phone, method)
        assert got.uri == f"sip:bob@{phone.host}:{phone.port}"
        assert got.headers.get("Max-Forwards") == "69"
        respond(phone, got, 200, tag="phone")
        assert caller.final(again).status == 200
    # the callee's requests go to the caller's Contact through the same route
    for method, cseq in (("INFO", 1), ("BYE", 2)):
        headers = Headers([("Via", f"SIP/2.0/UDP {phone.host}:{phone.port};branch=z9hG4bKb{cseq}"),
                           ("Max-Forwards", "70"), ("From", ok.headers.get("To")),
                           ("To", ok.headers.get("From")), ("Call-ID", ok.call_id),
                           ("CSeq", f"{cseq} {method}"),
                           ("Route", ok.headers.get("Record-Route"))])
        from_callee = Request(method, f"sip:carol@{caller.host}:{caller.port}", headers)
        phone.send(from_callee)
        got = incoming(caller, method)
        assert "Route" not in got.headers and len(got.via) == 2
        respond(caller, got, 200, tag=caller.tag)
        assert phone.final(from_callee).status == 200
