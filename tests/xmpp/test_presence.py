"""Presence (RFC 6121 §4): broadcast, probes, directed presence, unavailable on any disconnect,
and the presence of accounts online through other protocols."""
import pytest

from convergence import Presence
from convergence.plugins.xmpp import presence as xmpp_presence
from convergence.plugins.xmpp import visibility
from convergence.presence import UNAVAILABLE
from convergence.testing import RecordingEndpoint

from .roster_client import available_from, drain, next_presence, send_presence

PEOPLE = {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c"}


def test_broadcast_changes_and_unavailable_on_tcp_loss(xmpp_server, xmpp_client):
    server = xmpp_server(PEOPLE)
    bob = xmpp_client(server, "bob")
    alice = xmpp_client(server, "alice")
    next_presence(bob, alice.jid)  # §4.2.2: initial presence reaches the contacts
    available_from(alice, bob.jid)  # §4.3.2: and the contacts' presence comes back
    send_presence(alice, status="at lunch", show="away")  # §4.4: subsequent presence
    changed = next_presence(bob, alice.jid)
    assert (changed["show"], changed["status"]) == ("away", "at lunch")
    alice.call(lambda: alice.xmpp.transport.abort())  # the TCP connection dies, no </stream>
    next_presence(bob, alice.jid, "unavailable")  # §4.5.2 on behalf of the lost resource


def test_other_resources_of_the_account_see_each_other(xmpp_server, xmpp_client):
    server = xmpp_server(PEOPLE)
    phone = xmpp_client(server, "alice", resource="phone")
    desk = xmpp_client(server, "alice", resource="desk")
    next_presence(phone, desk.jid)
    available_from(desk, phone.jid, desk.jid)  # including its own presence, echoed (§4.2.2)
    desk.disconnect()
    next_presence(phone, desk.jid, "unavailable")


def test_directed_presence_gets_unavailable_too(xmpp_server, xmpp_client):
    server = xmpp_server(PEOPLE, shared_roster=False)
    alice = xmpp_client(server, "alice")
    carol = xmpp_client(server, "carol")
    send_presence(alice, "carol@example.org")  # §4.6: carol is not a contact
    next_presence(carol, alice.jid)
    alice.disconnect()
    next_presence(carol, alice.jid, "unavailable")  # §4.6.3


def test_no_presence_without_subscription(xmpp_server, xmpp_client):
    server = xmpp_server(PEOPLE, shared_roster=False)
    bob = xmpp_client(server, "bob")
    alice = xmpp_client(server, "alice")
    next_presence(alice, alice.jid)
    assert not [p for p in drain(bob) if p["from"].bare == "alice@example.org"]



def test_stored_messages_arrive_with_initial_presence(xmpp_server, xmpp_client):
    server = xmpp_server(PEOPLE)
    bob = xmpp_client(server, "bob")
    for body in ("one", "two", "three"):
        bob.send_message("alice@example.org", body)
    alice = xmpp_client(server, "alice")  # XEP-0160: delivered in order after initial presence
    assert [alice.next("message")["body"] for _ in range(3)] == ["one", "two", "three"]


def test_bad_presence_gets_an_error(xmpp_server, xmpp_client):
    server = xmpp_server(PEOPLE)
    alice = xmpp_client(server, "alice")
    send_presence(alice, "romeo@example.net")  # no server-to-server
    error = alice.next("presence", match=lambda p: p.xml.get("type") == "error")
    assert error["error"]["condition"] == "remote-server-not-found"
    send_presence(alice, priority="1000")
    error = alice.next("presence", match=lambda p: p.xml.get("type") == "error")
    assert error["error"]["condition"] == "bad-request"


# -- presence of accounts online through other protocols (sans network: a core and sessions) --
class FakeSession:
    """What presence.py uses of a c2s session."""

    protocol = "xmpp"

    def __init__(self, service, address):
        self.service, self.address, self.account = service, address, address.bare
        self.presence, self.available, self.interested, self.directed = UNAVAILABLE, True, True, set()
        self.sent = []

    def send(self, element):
        self.sent.append(element)
        return True

    def deliver(self, message):
        pass


@pytest.fixture
def hub(core):
    """The core with the xmpp plugin's service, alice online over XMPP, bob with an account."""
    core.add_account("alice", "pw")
    core.add_account("bob", "pw")
    service = core.pm.get_plugin("xmpp:server").service
    alice = FakeSession(service, core.address("alice", "desk"))
    service.bind(alice)
    core.presence.login(alice)
    return core, service, alice


def test_sip_endpoint_shows_as_a_resource_of_its_own(hub):
    core, service, alice = hub
    phone = RecordingEndpoint(core.address("bob", "sip-1"), "sip", Presence(show="away"))
    core.presence.register(phone, 3600)
    (stanza,) = alice.sent
    assert (stanza.get("from"), stanza.get("to"), stanza.get("type")) == \
        (str(phone.address), str(alice.address), None)
    assert stanza.findtext("{jabber:client}show") == "away"
    core.presence.register(phone, 3600)  # a refresh changes nothing
    core.presence.unregister(phone)
    assert [(s.get("from"), s.get("type")) for s in alice.sent[1:]] == [(str(phone.address), "unavailable")]


def test_each_endpoint_is_seen_even_when_the_combined_presence_does_not_change(hub):
    """A SIP phone registering while an equally available XMPP resource is online (on_presence
    does not fire) is shown, and so is a second binding and an HTTP stream logging in and out."""
    core, service, alice = hub
    bob = FakeSession(service, core.address("bob", "laptop"))
    bob.presence = Presence()
    service.bind(bob)
    core.presence.login(bob)
    alice.sent.clear()
    phones = [RecordingEndpoint(core.address("bob", f"sip-{n}"), "sip") for n in (1, 2)]
    stream = RecordingEndpoint(core.address("bob", "http-1"), "http")
    for phone in phones:
        core.presence.register(phone, 3600)
    core.presence.login(stream)
    core.presence.logout(stream)
    core.presence.unregister(phones[0])
    assert core.presence.presence(bob.account) == Presence()  # never changed
    assert [(s.get("from"), s.get("type")) for s in alice.sent] == [
        ("bob@localhost/sip-1", None), ("bob@localhost/sip-2", None), ("bob@localhost/http-1", None),
        ("bob@localhost/http-1", "unavailable"), ("bob@localhost/sip-1", "unavailable")]


def test_probe_answers_and_new_sessions_list_every_endpoint(hub):
    """The initial-presence probe answers (§4.3.2) include each non-XMPP endpoint."""
    core, service, alice = hub
    phone = RecordingEndpoint(core.address("bob", "sip-1"), "sip", Presence(status="desk phone"))
    core.presence.register(phone, 3600)
    late = FakeSession(service, core.address("alice", "tablet"))
    visibility.show(service, core.address("bob"), [late])
    (stanza,) = late.sent
    assert (stanza.get("from"), stanza.findtext("{jabber:client}status")) == ("bob@localhost/sip-1", "desk phone")


def test_xmpp_changes_are_not_repeated_from_the_bare_jid(hub):
    core, service, alice = hub
    bob = FakeSession(service, core.address("bob", "laptop"))
    service.bind(bob)
    core.presence.login(bob)
    bob.presence = Presence()
    core.presence.update(bob)  # on_presence fires: bob's combined presence changed
    xmpp_presence.account_changed(service, bob.account)
    assert alice.sent == []  # the session's own broadcast (presence.outbound) covers it


def test_echo_shows_to_sessions_as_a_service_user(hub):
    core, service, alice = hub
    echo = core.address(core.config["echo"]["user"])
    core.presence.set_service(echo, None)
    core.presence.set_service(echo, Presence(status="here"))
    assert [s.get("type") for s in alice.sent] == ["unavailable", None]
    assert alice.sent[-1].findtext("{jabber:client}status") == "here"
