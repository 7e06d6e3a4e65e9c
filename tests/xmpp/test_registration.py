"""In-band registration (XEP-0077): off by default, then register, change password, remove."""
import pytest
import slixmpp
from slixmpp.exceptions import IqError

from scenario_kit import LoginFailed
from .roster_client import condition, iq, next_push

REGISTER = "<query xmlns='jabber:iq:register'>{}</query>"


def fields(username, password):
    return REGISTER.format(f"<username>{username}</username><password>{password}</password>")


def register_anonymously(server, client_loop, username, password):
    """Connect without logging in (STARTTLS only) and send a registration set: the result, or
    the error condition."""
    async def run():
        xmpp = slixmpp.ClientXMPP(server.jid("anon"), "x")
        xmpp.ca_certs = server.cert
        xmpp.register_plugin("xep_0077")
        xmpp.plugin["feature_mechanisms"].unhandled = True
        done = client_loop.loop.create_future()

        async def register(_):
            request = xmpp.Iq(stype="set")
            request["register"]["username"] = username
            request["register"]["password"] = password
            try:
                await request.send()
                done.set_result("ok")
            except IqError as exc:
                done.set_result(condition(exc))
            xmpp.disconnect()
        xmpp.add_event_handler("register", register)
        xmpp.plugin["xep_0077"].force_registration = True
        xmpp.connect("127.0.0.1", server.port)
        return await done
    return client_loop.run(run, timeout=15)


def test_off_by_default(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a"})
    alice = xmpp_client(server, "alice")
    for request, kind in ((REGISTER.format(""), "get"), (fields("alice", "changed"), "set")):
        with pytest.raises(IqError) as exc:
            iq(alice, request, kind)
        assert condition(exc.value) == "service-unavailable"


def test_register_before_login(xmpp_server, xmpp_client, client_loop):
    server = xmpp_server({"alice": "pw-a"}, allow_registration=True)
    alice = xmpp_client(server, "alice", roster=True)
    assert register_anonymously(server, client_loop, "newbie", "s3cret") == "ok"
    assert next_push(alice, "newbie@example.org").get("subscription") == "both"  # shared roster
    assert register_anonymously(server, client_loop, "newbie", "other") == "conflict"
    assert register_anonymously(server, client_loop, "bad@name", "x") == "not-acceptable"
    newbie = xmpp_client(server, "newbie", password="s3cret")
    assert newbie.jid.startswith("newbie@example.org/")


def test_change_password_and_remove(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"}, allow_registration=True)
    bob = xmpp_client(server, "bob", roster=True)
    alice = xmpp_client(server, "alice")
    form = iq(alice, REGISTER.format("")).xml.find("{jabber:iq:register}query")
    assert form.find("{jabber:iq:register}registered") is not None
    iq(alice, fields("alice", "new-pw"), "set")  # §3.3
    with pytest.raises(IqError) as exc:
        iq(alice, fields("bob", "mine-now"), "set")
    assert condition(exc.value) == "not-allowed"
    alice.disconnect()
    with pytest.raises(LoginFailed):
        xmpp_client(server, "alice", password="pw-a", resource="old")
    alice = xmpp_client(server, "alice", password="new-pw", resource="new")
    iq(alice, REGISTER.format("<remove/>"), "set")  # §3.2
    alice.next("disconnected")
    assert next_push(bob, "alice@example.org", "remove") is not None
    with pytest.raises(LoginFailed):
        xmpp_client(server, "alice", password="new-pw", resource="gone")
