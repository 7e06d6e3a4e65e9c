"""Bad input across the bridge: each protocol's sender gets a clear error, nobody gets a part.

Unknown recipients, bodies SIP cannot carry, spoofed senders and too-large messages, with the same
real clients as the convergence story (slixmpp, SIPp) on one real server.
"""
from actors import DOMAIN, PHONE_PASSWORD, condition, received_messages
from sipp_runner import needs_sipp, request

pytestmark = needs_sipp


def test_xmpp_to_an_unknown_local_user_is_service_unavailable(demo, xmpp_client):
    user = xmpp_client(demo, "convergence")
    user.send_message(demo.jid("nobody"), "hello?")
    error = user.next("message_error")
    assert condition(error) == "service-unavailable"  # RFC 6121 §8.5.1: no harvesting


def test_sip_to_an_unknown_user_is_404(phone):
    phone.send("nobody", "hello?", expect=404)


def test_sip_with_a_body_type_we_cannot_relay_is_415(phone):
    def message(cseq, auth):
        return request("MESSAGE", cseq, f"sip:convergence@{DOMAIN}", auth=auth, body="PK zip bytes",
                       content_type="application/octet-stream", sender="sipuserf",
                       recipient="convergence", domain=DOMAIN)
    log = phone.sipp.run("binary", message(1, False) + '  <recv response="407" auth="true"/>\n'
                         + message(2, True) + '  <recv response="415"/>\n',
                         user="sipuserf", password=PHONE_PASSWORD)
    assert "Accept: text/plain, text/html" in log


def test_a_phone_cannot_send_as_someone_else(phone):
    def spoofed(cseq, auth):  # authenticates as sipuserf, claims to be convergence
        return request("MESSAGE", cseq, f"sip:userc@{DOMAIN}", auth=auth, body="it's me",
                       content_type="text/plain", sender="convergence", recipient="userc",
                       domain=DOMAIN)
    phone.sipp.run("spoof", spoofed(1, False) + '  <recv response="407" auth="true"/>\n'
                   + spoofed(2, True) + '  <recv response="403"/>\n',
                   user="sipuserf", password=PHONE_PASSWORD)


def test_an_xmpp_client_cannot_send_as_someone_else(demo, xmpp_client):
    mallory, userc = xmpp_client(demo, "convergence"), xmpp_client(demo, "userc")

    def spoof():
        message = mallory.xmpp.make_message(mto=demo.jid("userc"), mbody="it's sipuserf",
                                            mfrom=demo.jid("sipuserf", "phone"))
        message.send()
    mallory.call(spoof)
    got = userc.next("message")
    assert got["from"] == mallory.jid  # the server stamps the authenticated sender (RFC 6120 §8.1.2.1)


def test_a_message_too_big_for_the_phone_is_refused_at_entry_not_truncated(demo, xmpp_client, phone):
    user = xmpp_client(demo, "convergence")
    phone.register()
    incoming = phone.receive()
    user.send_message(demo.jid("sipuserf"), "x" * 70000)  # fits XMPP's 256 KiB, not SIP's 64 KiB
    error = user.next("message_error")
    assert condition(error) == "policy-violation"
    assert "sip carries at most" in error["error"]["text"]
    user.send_message(demo.jid("sipuserf"), "small enough")
    (got,) = received_messages(incoming())  # the phone saw only the message that fits
    assert "small enough" in got

