"""SIP phones and federation (issue 13): a remote user's message reaches a phone registered here
as a MESSAGE whose From is the remote JID, with no SIP code knowing about s2s (the core's router
hands the inbound stanza to the phone's binding like any local message). Against a real Prosody
and between two Convergence servers; the phones are SIPp.

A phone writes to another domain with a MESSAGE whose Request-URI names it: the SIP plugin takes
it from an authenticated local user only and hands it to the core's router, which reaches the
domain over XMPP federation (the MESSAGE is never relayed as SIP)."""
import pytest

from convergence.testing import free_port
from sipp_runner import needs_sipp

from .phones import SIP, FederatedPhone
from .prosody import OURS, PROSODY, Prosody

pytestmark = needs_sipp
A, B = "a.example", "b.example"


def reaches(sender, phone, to: str, text: str) -> None:
    """``sender`` (an XMPP client of another domain) writes to the phone's account ``to``; the
    phone gets a MESSAGE with that text whose From is the sender's bare JID as a SIP URI."""
    incoming = phone.receive()
    sender.send_message(to, text)
    block = incoming().split("message received")[1]
    assert text in block
    sip_from = next(line for line in block.splitlines() if line.startswith("From:"))
    assert f"sip:{sender.jid.partition('/')[0]}" in sip_from


@pytest.fixture
def prosody_and_phone(federated, tmp_path):
    """A Prosody with ``bob``, and our server with the account ``phone`` registered by SIPp."""
    if PROSODY is None:
        pytest.skip("prosody is not installed (.ci/run installs it)")
    port = free_port()
    prosody = Prosody(tmp_path / "prosody", accounts={"bob": "bob-secret"}, peers={OURS: port})
    try:
        ours = federated(OURS, {"phone": "phone-secret"}, {prosody.domain: prosody.s2s_address},
                         xmpp={"s2s_listen": f"127.0.0.1:{port}"}, sip=SIP)
        phone = FederatedPhone(ours, "phone", "phone-secret", tmp_path / "sipp")
        phone.register()
        yield prosody, phone
    finally:
        prosody.stop()


def test_prosody_user_writes_to_a_phone(prosody_and_phone, xmpp_client):
    prosody, phone = prosody_and_phone
    reaches(xmpp_client(prosody, "bob"), phone, f"phone@{OURS}", "hello phone")


def test_phone_writes_to_a_prosody_user(prosody_and_phone, xmpp_client):
    prosody, phone = prosody_and_phone
    bob = xmpp_client(prosody, "bob")
    phone.send(f"bob@{prosody.domain}", "hello from a phone")
    got = bob.next("message", timeout=15)
    assert (str(got["from"]).split("/")[0], got["body"].strip()) == (f"phone@{OURS}", "hello from a phone")
    reaches(bob, phone, str(got["from"]), "hello phone")  # the reply reaches that phone


@pytest.fixture
def pair(federated):
    pa, pb = free_port(), free_port()
    a = federated(A, {"phonea": "pa-secret", "alice": "alice-secret"}, {B: f"127.0.0.1:{pb}"},
                  xmpp={"s2s_listen": f"127.0.0.1:{pa}"}, sip=SIP)
    b = federated(B, {"phoneb": "pb-secret"}, {A: f"127.0.0.1:{pa}"},
                  xmpp={"s2s_listen": f"127.0.0.1:{pb}"}, sip=SIP)
    return a, b


def test_xmpp_user_writes_to_a_phone_of_the_other_convergence(pair, tmp_path, xmpp_client):
    a, b = pair
    phone_b = FederatedPhone(b, "phoneb", "pb-secret", tmp_path / "b")
    phone_b.register()
    reaches(xmpp_client(a, "alice"), phone_b, f"phoneb@{B}", "xmpp to a remote phone")


def test_phone_to_phone_across_two_convergence_servers(pair, tmp_path):
    a, b = pair
    phone_a = FederatedPhone(a, "phonea", "pa-secret", tmp_path / "a")
    phone_b = FederatedPhone(b, "phoneb", "pb-secret", tmp_path / "b")
    phone_a.register()
    phone_b.register()
    incoming = phone_b.receive()
    phone_a.send(f"phoneb@{B}", "phone to phone")
    block = incoming().split("message received")[1]
    assert "phone to phone" in block and f"sip:phonea@{A}" in block
