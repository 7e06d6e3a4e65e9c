"""Messages between real slixmpp clients (RFC 6121 §5, §8.5; XEP-0160, XEP-0203, XEP-0280)."""
import xml.etree.ElementTree as ET

import pytest


@pytest.fixture
def server(xmpp_server):
    return xmpp_server({"alice": "wonderland", "bob": "builder"})


def test_bare_jid_reaches_every_available_resource(server, xmpp_client):
    phone = xmpp_client(server, "bob", resource="phone")
    desk = xmpp_client(server, "bob", resource="desk")
    alice = xmpp_client(server, "alice")
    alice.send_message("bob@example.org", "to both")
    for bob in (phone, desk):
        message = bob.next("message")
        assert (message["body"], str(message["from"]), str(message["to"])) == (
            "to both", alice.jid, "bob@example.org")


def test_full_jid_reaches_only_that_resource(server, xmpp_client):
    phone = xmpp_client(server, "bob", resource="phone")
    desk = xmpp_client(server, "bob", resource="desk")
    alice = xmpp_client(server, "alice")
    alice.send_message("bob@example.org/desk", "desk only")
    assert desk.next("message")["body"] == "desk only"
    alice.send_message("bob@example.org/phone", "phone only")  # ordered after the first one
    assert phone.next("message")["body"] == "phone only"
    desk.none("message", 0.2)


def test_offline_messages_are_delivered_in_order_with_a_delay_stamp(server, xmpp_client):
    alice = xmpp_client(server, "alice")
    for i in range(5):
        alice.send_message("bob@example.org", f"offline {i}", subject=f"s{i}", thread="t1")
    alice.send_message("alice@example.org", "flush")  # to herself: ordered after the five
    assert alice.next("message")["body"] == "flush"
    bob = xmpp_client(server, "bob", roster=True)  # initial presence triggers delivery (XEP-0160)
    received = [bob.next("message") for _ in range(5)]
    assert [m["body"] for m in received] == [f"offline {i}" for i in range(5)]
    assert [m["subject"] for m in received] == [f"s{i}" for i in range(5)]
    assert all(m["thread"] == "t1" and str(m["from"]) == alice.jid for m in received)
    assert all(m["delay"]["from"] == "example.org" and m["delay"]["stamp"] for m in received)
    bob.none("message", 0.2)  # delivered once, and removed from the store


def test_echo_answers_an_xmpp_client(server, xmpp_client):
    alice = xmpp_client(server, "alice")
    alice.send_message("echo@example.org", "hello echo")
    reply = alice.next("message")
    assert (reply["body"], str(reply["from"]), reply["type"]) == ("hello echo", "echo@example.org", "chat")


def test_message_to_unknown_account_gets_service_unavailable(server, xmpp_client):
    alice = xmpp_client(server, "alice")
    alice.watch("message_error")  # before sending: the error may come back at once
    alice.send_message("nobody@example.org", "anyone?")
    error = alice.next("message_error")
    assert error["error"]["condition"] == "service-unavailable"


def test_carbons_copy_sent_and_received_messages(server, xmpp_client):
    phone = xmpp_client(server, "alice", resource="phone")
    laptop = xmpp_client(server, "alice", resource="laptop")
    bob = xmpp_client(server, "bob")
    laptop.call(laptop.xmpp.plugin["xep_0280"].enable)
    phone.send_message(bob.jid, "sent from the phone")
    sent = laptop.next("carbon_sent")
    assert sent["carbon_sent"]["body"] == "sent from the phone"
    assert str(sent["carbon_sent"]["to"]) == bob.jid
    assert bob.next("message")["body"] == "sent from the phone"
    bob.send_message(phone.jid, "to the phone")
    received = laptop.next("carbon_received")
    assert (received["carbon_received"]["body"], str(received["carbon_received"]["from"])) == (
        "to the phone", bob.jid)
    assert phone.next("message")["body"] == "to the phone"


def test_offline_store_keeps_bodies_and_follows_store_hints(server, xmpp_client, raw_client):
    """XEP-0160 with XEP-0085/XEP-0184 payloads and XEP-0334 hints: a chat state alone or a
    ``<no-store/>`` message is not stored; ``<store/>`` stores one without a body."""
    alice = xmpp_client(server, "alice")

    def send(body, *payloads):
        def go():
            message = alice.xmpp.make_message(mto="bob@example.org", mbody=body, mtype="chat")
            for payload in payloads:
                message.xml.append(ET.fromstring(payload))
            message.send()
        alice.call(go)
    send(None, "<composing xmlns='http://jabber.org/protocol/chatstates'/>")
    send("secret", "<no-store xmlns='urn:xmpp:hints'/>")
    send(None, "<store xmlns='urn:xmpp:hints'/>", "<received xmlns='urn:xmpp:receipts' id='r1'/>")
    send("kept")
    alice.send_message("alice@example.org", "flush")
    assert alice.next("message")["body"] == "flush"
    alice.none("message", 0.2)  # none of them was refused
    bob = raw_client(server)  # slixmpp has no event for a message without a body
    bob.login("bob", "builder")
    bob.send(b"<presence/><message to='bob@example.org/raw' id='end'><body>end</body></message>")
    events = bob.read(lambda e: getattr(e, "get", lambda _: None)("id") == "end")
    bodies = [e.findtext("{jabber:client}body") for e in events if getattr(e, "tag", "") == "{jabber:client}message"]
    assert bodies == [None, "kept", "end"]
