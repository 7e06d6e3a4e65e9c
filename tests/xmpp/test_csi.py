"""Client State Indication (XEP-0352): an inactive client gets presence updates and chat states
held back (the latest per sender), and anything urgent at once after what was held; transcripts on
a real Core, then slixmpp (plugin xep_0352) against a real server over STARTTLS."""
import xml.etree.ElementTree as ET

from convergence.plugins.xmpp.csi import held_key

from .test_c2s import login, service, svc  # noqa: F401

CHATSTATES = "http://jabber.org/protocol/chatstates"


def what(events) -> list:
    """Each stanza as (kind, detail): presence show/type, a message's body or chat state."""
    out = []
    for e in events:
        if not isinstance(e, ET.Element):
            continue
        if e.tag == "{jabber:client}presence":
            out.append(("presence", e.findtext("{jabber:client}show") or e.get("type") or "available"))
        elif e.tag == "{jabber:client}message":
            state = next((c.tag.split("}")[1] for c in e if c.tag.startswith("{" + CHATSTATES)), None)
            out.append(("message", e.findtext("{jabber:client}body") or state))
        elif e.tag == "{jabber:client}iq":
            out.append(("iq", e.get("type")))
    return out


def test_what_is_held_back():
    def key(xml):
        return held_key(ET.fromstring(xml.replace("<m ", "<message xmlns='jabber:client' ")
                                      .replace("</m>", "</message>")
                                      .replace("<p ", "<presence xmlns='jabber:client' ")))
    assert key("<p from='a'/>") == ("presence", "a")
    assert key("<p from='a' type='unavailable'/>") == ("presence", "a")
    assert key("<p from='a' type='subscribe'/>") is None  # a request waits for an answer
    assert key(f"<m from='a'><composing xmlns='{CHATSTATES}'/></m>") == ("chatstate", "a")
    assert key(f"<m from='a'><paused xmlns='{CHATSTATES}'/><thread>t</thread></m>") == ("chatstate", "a")
    assert key(f"<m from='a'><active xmlns='{CHATSTATES}'/><body>hi</body></m>") is None
    assert key("<m from='a'><received xmlns='urn:xmpp:receipts' id='1'/></m>") is None
    assert key(f"<m from='a' type='error'><gone xmlns='{CHATSTATES}'/></m>") is None
    assert key("<m from='a'/>") is None


def test_an_inactive_client_gets_noise_late_and_messages_at_once(service):
    svc = service(csi_max_held=2)
    for name in ("alice", "bob", "carol"):
        svc.core.add_account(name, "secret")
    alice, bob, carol = login(svc, "alice"), login(svc, "bob"), login(svc, "carol")
    alice.say(b"<presence/>")
    bob.say(b"<presence/>"), carol.say(b"<presence/>")
    alice.say(b"")
    assert alice.say(b"<inactive xmlns='urn:xmpp:csi:0'/>") == []
    bob.say(b"<presence><show>away</show></presence>")
    bob.say(b"<presence><show>dnd</show></presence>")  # replaces the held "away"
    bob.say(f"<message to='alice@example.org/phone' type='chat'><composing xmlns='{CHATSTATES}'/>"
            "</message>".encode())
    assert alice.say(b"") == []
    bob.say(f"<message to='alice@example.org/phone' type='chat'><body>hello</body>"
            f"<active xmlns='{CHATSTATES}'/></message>".encode())
    assert what(alice.say(b"")) == [("presence", "dnd"), ("message", "composing"), ("message", "hello")]
    for show in ("away", "xa"):  # the latest of each sender, in the order of their latest
        bob.say(b"<presence><show>%s</show></presence>" % show.encode())
        carol.say(b"<presence><show>chat</show></presence>")
    assert alice.say(b"") == []
    ping = alice.say(b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")  # urgent
    assert what(ping) == [("presence", "xa"), ("presence", "chat"), ("iq", "result")]
    carol.say(b"<presence type='unavailable'/>")
    bob.say(b"<presence/>")
    assert alice.say(b"") == []
    bob.say(f"<message to='alice@example.org/phone'><paused xmlns='{CHATSTATES}'/></message>".encode())
    # the third held stanza: more than csi_max_held, all go
    assert what(alice.say(b"")) == [("presence", "unavailable"), ("presence", "available"),
                                    ("message", "paused")]
    bob.say(b"<presence><show>xa</show></presence>")
    assert alice.say(b"") == []
    assert what(alice.say(b"<active xmlns='urn:xmpp:csi:0'/>")) == [("presence", "xa")]
    bob.say(b"<presence><show>away</show></presence>")
    assert what(alice.say(b"")) == [("presence", "away")]  # active: at once again


def test_slixmpp_inactive_client_gets_presence_late_and_messages_at_once(xmpp_server, xmpp_client):
    """alice (slixmpp, xep_0352) says she is inactive: bob's presence changes and typing
    notifications wait; his message comes at once, after the latest of what waited; back to
    active, presence comes at once again."""
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"})
    alice = xmpp_client(server, "alice", plugins=("xep_0352", "xep_0085"))
    bob = xmpp_client(server, "bob", plugins=("xep_0085",))
    alice.next("presence", match=lambda p: p["from"] == bob.jid)  # bob came online
    seen = []  # presence and messages, in the order alice's client got them
    alice.call(alice.xmpp.add_event_handler, "presence", lambda p: seen.append(("presence", p["show"])))
    alice.call(alice.xmpp.add_event_handler, "message", lambda m: seen.append(("message", m["body"])))
    alice.call(alice.xmpp.add_event_handler, "chatstate",
               lambda m: seen.append(("chat state", m["chat_state"])))
    alice.call(alice.xmpp.plugin["xep_0352"].send_inactive)
    alice.call(alice.xmpp.get_roster)  # the server has read <inactive/> (nothing held yet)
    for show in ("away", "xa"):
        bob.call(lambda: bob.xmpp.send_presence(pshow=show))
    bob.send_message(alice.jid, "", chat_state="composing")  # XEP-0085 alone, no body
    bob.send_message(alice.jid, "hello")
    assert alice.next("message", match=lambda m: m["body"] == "hello")
    # "away" never came (held, then replaced by "xa"): what waited came just before the message
    assert seen == [("presence", "xa"), ("chat state", "composing"), ("message", "hello")]
    alice.call(alice.xmpp.plugin["xep_0352"].send_active)
    bob.call(lambda: bob.xmpp.send_presence(pshow="dnd"))
    alice.next("presence", match=lambda p: p["show"] == "dnd")
