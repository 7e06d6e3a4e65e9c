"""The JSON API with a real HTTP client: sending across protocols, the roster and presence of
contacts, the OpenAPI document, and every kind of bad input answered with a JSON 4xx."""
import re

import pytest
from api_client import call
from xmpp.roster_client import roster_set

from convergence import Message
from convergence.plugins.http import api
from convergence.plugins.http.app import create_app
from convergence.testing import RecordingEndpoint

PEOPLE = {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c"}


@pytest.fixture
def server(convergence_server):
    return convergence_server(PEOPLE)


def send(server, fields, user="alice"):
    return call(server, "POST", "/api/messages", fields, user=user)


def test_a_message_sent_with_the_api_reaches_an_xmpp_client(server, xmpp_client):
    bob = xmpp_client(server, "bob")
    sent = send(server, {"to": "bob@example.org", "body": "hello bob", "subject": "hi",
                         "thread": "t7"})
    assert (sent.status, sent.json["outcome"]) == (200, "delivered") and sent.json["id"]
    got = bob.next("message")
    assert (str(got["from"]), got["type"], got["body"]) == ("alice@example.org", "chat", "hello bob")
    assert (got["subject"], got["thread"], got["id"]) == ("hi", "t7", sent.json["id"])


def test_to_an_offline_account_it_is_stored_202_and_delivered_at_login(server, xmpp_client):
    sent = send(server, {"to": "xmpp:carol@example.org", "body": "for later", "type": "normal"})
    assert (sent.status, sent.json["outcome"]) == (202, "stored")
    carol = xmpp_client(server, "carol")
    got = carol.next("message")
    assert (got["body"], got["type"], str(got["from"])) == ("for later", "normal", "alice@example.org")
    assert got["delay"]["stamp"]


def test_roster_lists_contacts_with_live_presence(server, xmpp_client):
    bob = xmpp_client(server, "bob")
    bob.call(lambda: bob.xmpp.send_presence(pshow="dnd", pstatus="busy"))
    bob.next("presence", match=lambda p: p["show"] == "dnd")  # the server has it
    roster = call(server, "GET", "/api/roster", user="alice")
    assert roster.status == 200 and roster.json["version"]
    contacts = {c["jid"]: c for c in roster.json["contacts"]}
    assert set(contacts) == {"bob@example.org", "carol@example.org", "echo@example.org",
                             "httpuser@example.org"}
    assert contacts["bob@example.org"] == {
        "jid": "bob@example.org", "name": None, "subscription": "both", "groups": ["Friends"],
        "presence": {"available": True, "show": "dnd", "status": "busy"}}
    assert contacts["carol@example.org"]["presence"]["available"] is False
    assert contacts["echo@example.org"]["presence"]["available"] is True


def test_presence_of_one_contact(server, xmpp_client):
    xmpp_client(server, "bob")
    bob = call(server, "GET", "/api/presence/bob@example.org", user="alice")
    assert (bob.status, bob.json) == (200, {"jid": "bob@example.org", "available": True,
                                            "show": None, "status": None})
    assert call(server, "GET", "/api/presence/carol@example.org", user="alice").json["available"] is False
    assert call(server, "GET", "/api/presence/alice@example.org", user="alice").json["available"] is False
    unknown = call(server, "GET", "/api/presence/zed@example.org", user="alice")
    assert unknown.status == 404 and "contact list" in unknown.json["message"]
    assert call(server, "GET", "/api/presence/a@b@c", user="alice").status == 400


def test_presence_needs_a_subscription_without_the_shared_roster(convergence_server, xmpp_client):
    server = convergence_server(PEOPLE, xmpp={"shared_roster": False})
    xmpp_client(server, "bob")
    alice = xmpp_client(server, "alice", roster=True)
    roster_set(alice, "bob@example.org", "Bob", ["Work"])  # on the list, subscription none
    listed = call(server, "GET", "/api/roster", user="alice").json["contacts"]
    assert listed == [{"jid": "bob@example.org", "name": "Bob", "subscription": "none",
                       "groups": ["Work"], "presence": None}]
    refused = call(server, "GET", "/api/presence/bob@example.org", user="alice")
    assert (refused.status, refused.json["status"]) == (403, 403)
    assert call(server, "GET", "/api/presence/carol@example.org", user="alice").status == 404


def test_bad_input_is_a_json_4xx_naming_the_field(server):
    def refused(body, status=400, headers=None, field=None):
        reply = call(server, "POST", "/api/messages", body, user="alice", headers=headers)
        assert (reply.status, reply.json["status"]) == (status, status), reply.json
        if field:
            assert reply.json["message"].startswith(f"{field}:"), reply.json
        return reply
    refused(b"{not json", headers={"Content-Type": "application/json"})
    refused(["a", "list"])
    refused({"body": "no recipient"}, field="to")
    refused({"to": "bob@example.org"}, field="body")
    refused({"to": "bob@example.org", "body": ""}, field="body")
    refused({"to": "bob@example.org", "body": 7}, field="body")
    refused({"to": "bob@@example.org", "body": "x"}, field="to")
    refused({"to": "bob@example.org", "body": "x", "type": "error"}, field="type")
    refused({"to": "bob@example.org", "body": "x", "colour": "red"}, field="colour")
    refused({"to": "bob@example.org", "body": "bell \x07"}, field="body")
    refused({"to": "bob@example.org", "body": "x", "stream": "http-nope"}, field="stream")
    # the sender is the authenticated account: a from field is refused, not obeyed
    refused({"to": "bob@example.org", "body": "x", "from": "bob@example.org"}, field="from")
    refused(b'{"to": "bob@example.org", "body": "x"}', 415, {"Content-Type": "text/plain"})
    refused({"to": "bob@example.org", "body": "x" * 70000}, 413)
    unknown = refused({"to": "nobody@example.org", "body": "x"}, 404)
    assert unknown.json["condition"] == "item-not-found"
    remote = refused({"to": "bob@elsewhere.net", "body": "x"}, 404)
    assert remote.json["condition"] == "remote-server-not-found"
    assert call(server, "GET", "/api/status").status == 200  # and the server goes on


def test_wrong_credentials_are_401_with_a_challenge_then_throttled(convergence_server):
    server = convergence_server(PEOPLE, http={"login_failures": 2})
    assert call(server, "GET", "/api/roster").status == 401  # no credentials: not a failure
    server.passwords["alice"] = "wrong"
    for _ in range(2):
        refused = call(server, "GET", "/api/roster", user="alice")
        assert (refused.status, refused.json["status"]) == (401, 401)
        assert refused.headers["WWW-Authenticate"] == \
            'Basic realm="example.org", Bearer realm="example.org"'
    server.passwords["alice"] = PEOPLE["alice"]
    throttled = call(server, "GET", "/api/roster", user="alice")  # even the right password, now
    assert (throttled.status, throttled.headers["Retry-After"]) == (429, "60")


def test_basic_user_may_be_the_bare_jid(server):
    server.passwords["alice@example.org"] = PEOPLE["alice"]
    assert call(server, "GET", "/api/roster", user="alice@example.org").status == 200
    server.passwords["alice@elsewhere.net"] = PEOPLE["alice"]
    assert call(server, "GET", "/api/roster", user="alice@elsewhere.net").status == 401


def test_a_message_too_big_for_its_path_is_413(make_core):
    """The router's protocol size limit (policy-violation) maps to 413."""
    core = make_core()
    alice, bob = core.add_account("alice", "pw"), core.add_account("bob", "pw")
    core.router.limit("tiny", 10)
    core.presence.login(RecordingEndpoint(bob.with_resource("t"), "tiny"))
    client = create_app(core).test_client()
    auth = {"Authorization": "Basic YWxpY2U6cHc="}  # alice:pw
    reply = client.post("/api/messages", json={"to": "bob@localhost", "body": "x" * 11}, headers=auth)
    assert (reply.status_code, reply.json["condition"]) == (413, "policy-violation")
    assert client.post("/api/messages", json={"to": "bob@localhost", "body": "x" * 10},
                       headers=auth).status_code == 200
    assert isinstance(core.presence.endpoints(bob)[0].received[0], Message)


def test_openapi_document_describes_every_route(core, server):
    document = call(server, "GET", "/api/openapi.json")  # no credentials needed
    assert document.status == 200 and document.json["openapi"] == "3.1.0"
    routes = {rule.rule.replace("<path:jid>", "{jid}") for rule in create_app(core).url_map.iter_rules()
              if rule.endpoint.startswith(f"{api.blueprint.name}.")}
    assert routes == set(document.json["paths"])
    components = document.json["components"]
    assert {s["scheme"] for s in components["securitySchemes"].values()} == {"basic", "bearer"}
    assert components["schemas"]["Error"]["required"] == ["status", "message"]
    assert set(components["schemas"]["SendRequest"]["properties"]) == set(api.MESSAGE_FIELDS)



ADDRESSES = ["bob@example.org", "xmpp:bob@example.org/phone", "sip:bob@example.org", "im:bob@example.org",
             "nobody@example.org", "example.org", "bob@example.net",  # valid shapes (404 or sent)
             "", " ", "bob@", "@example.org", "a@b@example.org", "bob@-x.org", "bob@x..org",
             "sip:bob@example.org/phone", "bob@example.org/", "bob@example.org/ ", "b<b@example.org"]
TEXTS = [({"body": "", "subject": "s"}, True), ({"body": ""}, False), ({"body": "a\x01b"}, False),
         ({"body": "b", "subject": "a\x1fb"}, False)]


def test_the_openapi_document_describes_what_the_server_accepts(server):
    """A client generating requests from the document (schemathesis) gets no 400 for them, and
    what the document rules out is refused (issue: clients sent ``to: ""``)."""
    schema = call(server, "GET", "/api/openapi.json").json["components"]["schemas"]["SendRequest"]
    to_rule = schema["properties"]["to"]
    for to in ADDRESSES:
        described = len(to) >= to_rule["minLength"] and re.search(to_rule["pattern"], to) is not None
        assert described == (send(server, {"to": to, "body": "hi"}).status != 400), to
    text_rule = schema["properties"]["body"]["pattern"]
    for fields, valid in TEXTS:
        texts = [fields["body"], fields.get("subject") or ""]
        described = all(re.search(text_rule, t) for t in texts) and any(texts)  # pattern and anyOf
        assert described == valid
        assert (send(server, {"to": "bob@example.org", **fields}).status != 400) == valid, fields
