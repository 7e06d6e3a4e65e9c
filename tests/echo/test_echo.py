"""The echo user answers every message with the same body, subject, thread and type."""
from convergence import Message
from convergence.testing import RecordingEndpoint


def test_echo_answers_the_endpoint_it_came_from(core):
    alice = core.add_account("alice", "pw")
    phone = RecordingEndpoint(alice.with_resource("phone"), "sip")
    laptop = RecordingEndpoint(alice.with_resource("laptop"), "xmpp")
    core.presence.login(phone)
    core.presence.login(laptop)
    sent = Message(phone.address, core.address("echo"), "ping", "subj", "t1", "chat")
    assert core.send(sent) == "delivered"
    assert laptop.received == []
    (reply,) = phone.received
    assert (reply.sender, reply.recipient) == (core.address("echo"), phone.address)
    assert (reply.body, reply.subject, reply.thread, reply.type) == ("ping", "subj", "t1", "chat")
    assert reply.id != sent.id


def test_echo_is_always_available_and_renamable(make_core):
    core = make_core({"echo": {"user": "parrot"}})
    assert core.presence.presence(core.address("parrot")).available
    assert not core.presence.presence(core.address("echo")).available


def test_echo_never_answers_errors(core):
    alice = core.add_account("alice", "pw")
    phone = RecordingEndpoint(alice.with_resource("phone"))
    core.presence.login(phone)
    core.send(Message(phone.address, core.address("echo"), "oops", type="error"))
    assert phone.received == []


def test_echo_reply_to_an_offline_sender_is_stored(core):
    from convergence.store import offline
    alice = core.add_account("alice", "pw")
    core.send(Message(alice.with_resource("gone"), core.address("echo"), "later"))
    assert offline.count(core.db, "alice") == 1
