"""The registrar (RFC 3261 §10.3) over real UDP/TCP: digest, bindings, expiry, persistence."""
from datetime import datetime, timezone

import gevent
import pytest
from gevent.event import Event

from convergence import hookimpl
from convergence.plugins.sip.transport import Clock
from convergence.plugins.sip import bindings


def now():
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Registrations:
    """A plugin recording on_register calls."""

    def __init__(self):
        self.seen, self.changed = [], Event()

    @hookimpl
    def on_register(self, account, endpoint, expires):
        self.seen.append((account.local, endpoint.address.resource, expires))
        self.changed.set()

    def wait(self, predicate, timeout=5):
        with gevent.Timeout(timeout):
            while not predicate():
                self.changed.clear()
                self.changed.wait()


def contacts_of(response):
    return sorted((c.uri, c.expires, c.q) for c in response.contacts)


@pytest.fixture
def registrar(sip_server, request):
    seen = Registrations()
    server = sip_server(plugins={"recorder": seen}, **getattr(request, "param", {}))
    server.core.add_account("alice", "secret")
    server.core.add_account("bob", "hunter2")
    server.seen = seen
    return server


@pytest.mark.parametrize("registrar, offered, algorithm", [
    ({}, ["MD5"], "MD5"),  # the default: what every stock phone answers (docs/sip.md)
    ({"digest_algorithms": ["SHA-256", "MD5"]}, ["SHA-256", "MD5"], "SHA-256"),  # RFC 8760 §2.4
    ({"digest_algorithms": ["SHA-256", "MD5"]}, ["SHA-256", "MD5"], "MD5"),
], indirect=["registrar"])
def test_register_with_digest(registrar, offered, algorithm):
    client = registrar.client()
    contact = f"<sip:alice@{client.host}:{client.port}>"
    request = client.request("REGISTER", headers=[("Contact", contact), ("Expires", "300")])
    challenge = client.ask(request)
    assert challenge.status == 401
    assert [c.split("algorithm=")[1].split(",")[0]
            for c in challenge.headers.get_all("WWW-Authenticate")] == offered
    assert 'realm="example.com"' in challenge.headers.get("WWW-Authenticate")
    response = client.ask(client.authorize(request, challenge, "alice", "secret",
                                           algorithm=algorithm))
    assert response.status == 200
    assert contacts_of(response) == [(f"sip:alice@{client.host}:{client.port}", 300, None)]
    (stored,) = bindings.current(registrar.core.db, now(), "alice")
    assert stored.contact == f"sip:alice@{client.host}:{client.port}"
    assert stored.received == f"udp:{client.host}:{client.port}"
    alice = registrar.core.address("alice")
    assert registrar.core.presence.presence(alice).available
    assert [e.protocol for e in registrar.core.presence.endpoints(alice)] == ["sip"]
    assert registrar.seen.seen[-1][0::2] == ("alice", 300)


def test_wrong_password_and_other_aor(registrar):
    client = registrar.client()
    request = client.request("REGISTER", headers=[("Contact", "<sip:alice@192.0.2.1>")])
    challenge = client.ask(request)
    assert client.ask(client.authorize(request, challenge, "alice", "wrong")).status == 401
    as_bob = client.request("REGISTER", user="bob", headers=[("Contact", "<sip:bob@192.0.2.1>")])
    challenge = client.ask(as_bob)
    response = client.ask(client.authorize(as_bob, challenge, "alice", "secret"))
    assert response.status == 403  # alice may not bind bob's AOR
    nobody = client.request("REGISTER", user="nobody", headers=[("Contact", "<sip:x@192.0.2.1>")])
    challenge = client.ask(nobody)
    assert client.ask(client.authorize(nobody, challenge, "nobody", "x")).status == 401
    assert bindings.current(registrar.core.db, now()) == []


def test_several_contacts_q_values_refresh_and_removal(registrar):
    client = registrar.client()
    both = "<sip:alice@192.0.2.1:5070>;q=0.5, <sip:alice@192.0.2.2:5070>;q=1.0;expires=120"
    response = client.register("alice", "secret", contact=both, expires=600)
    assert contacts_of(response) == [("sip:alice@192.0.2.1:5070", 600, 0.5),
                                     ("sip:alice@192.0.2.2:5070", 120, 1.0)]
    assert [e.uri for e in registrar.element.location.contacts("alice")] == [
        "sip:alice@192.0.2.2:5070", "sip:alice@192.0.2.1:5070"]  # highest q first
    # a query (no Contact) lists them; a removal (expires=0) takes one away
    assert len(client.register("alice", "secret", contact="", expires=None).contacts) == 2
    response = client.register("alice", "secret", contact="<sip:alice@192.0.2.1:5070>", expires=0)
    assert contacts_of(response) == [("sip:alice@192.0.2.2:5070", 120, 1.0)]
    assert [b.contact for b in bindings.current(registrar.core.db, now(), "alice")] == [
        "sip:alice@192.0.2.2:5070"]
    assert ("alice", 0) in [(name, expires) for name, _, expires in registrar.seen.seen]


def test_contact_star_removes_every_binding(registrar):
    client = registrar.client()
    client.register("alice", "secret", contact="<sip:alice@192.0.2.1>, <sip:alice@192.0.2.2>")
    assert client.register("alice", "secret", contact="*", expires=300).status == 400
    response = client.register("alice", "secret", contact="*", expires=0)
    assert response.status == 200 and response.contacts == []
    assert bindings.current(registrar.core.db, now(), "alice") == []
    assert not registrar.core.presence.presence(registrar.core.address("alice")).available


def test_min_and_max_expires(registrar):
    client = registrar.client()
    response = client.register("alice", "secret", expires=10)
    assert (response.status, response.headers.get("Min-Expires")) == (423, "60")
    response = client.register("alice", "secret", expires=100000)
    assert response.contacts[0].expires == 3600


def test_out_of_order_cseq_is_refused(registrar):
    client = registrar.client()
    contact = [("Contact", "<sip:alice@192.0.2.9>")]
    first = client.request("REGISTER", call_id="same-call", cseq=10, headers=contact)
    response = client.ask(client.authorize(first, client.ask(first), "alice", "secret"))
    assert response.status == 200
    older = client.request("REGISTER", call_id="same-call", cseq=5, headers=contact)
    response = client.ask(client.authorize(older, client.ask(older), "alice", "secret"))
    assert response.status == 400 and "CSeq" in response.reason  # CSeq 6 < 11
    (stored,) = bindings.current(registrar.core.db, now(), "alice")
    assert stored.cseq == 11


def test_replayed_and_stale_nonces(registrar):
    client = registrar.client()
    request = client.request("REGISTER", headers=[("Contact", "<sip:alice@192.0.2.1>")])
    authorized = client.authorize(request, client.ask(request), "alice", "secret")
    assert client.ask(authorized).status == 200
    replay = client.authorize(request, client.ask(request), "alice", "secret")
    replay.headers.set("Authorization", authorized.headers.get("Authorization"))  # same nonce, nc
    response = client.ask(replay)
    assert response.status == 401 and "stale=true" in response.headers.get("WWW-Authenticate")
    registrar.element.auth.digest.lifetime = 0  # every nonce is now stale
    request = client.request("REGISTER", headers=[("Contact", "<sip:alice@192.0.2.1>")])
    response = client.ask(client.authorize(request, client.ask(request), "alice", "secret"))
    assert response.status == 401 and "stale=true" in response.headers.get("WWW-Authenticate")


def test_wrong_password_flood_is_limited_while_others_register(registrar):
    attacker = registrar.client()  # 127.0.0.1
    legit = registrar.client(host="127.0.0.2")
    request = attacker.request("REGISTER", headers=[("Contact", "<sip:alice@192.0.2.66>")])
    challenge = attacker.ask(request)
    statuses = []
    for attempt in range(1000):
        guess = attacker.authorize(request, challenge, "alice", f"guess{attempt}")
        statuses.append(attacker.ask(guess).status)
        if attempt == 500:
            assert legit.register("bob", "hunter2").status == 200
    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {403}
    right = attacker.authorize(request, challenge, "alice", "secret")
    assert attacker.ask(right).status == 403  # the source stays blocked for the window
    assert legit.register("alice", "secret").status == 200


def test_bindings_expire_on_time(registrar):
    registrar.element.registrar.settings = dict(registrar.element.registrar.settings,
                                                min_expires=1)
    client = registrar.client()
    assert client.register("alice", "secret", expires=1).status == 200
    registrar.seen.wait(lambda: ("alice", 0) in [(n, e) for n, _, e in registrar.seen.seen])
    assert bindings.current(registrar.core.db, now(), "alice") == []
    assert bindings.pop_expired(registrar.core.db, now()) == []  # removed, not just outdated
    assert not registrar.core.presence.presence(registrar.core.address("alice")).available


def test_register_over_tcp(registrar):
    client = registrar.client("tcp")
    response = client.register("alice", "secret")
    assert response.status == 200
    (stored,) = bindings.current(registrar.core.db, now(), "alice")
    assert stored.received == f"tcp:{client.host}:{client.port}"


def test_one_clock_gives_the_stored_expiry_and_the_date(registrar):
    """The registrar reads the wall time from the element's clock only (RFC 3261 §10.3 step 8:
    the 200's Date; the expiry stored), its timers from the same clock's monotonic time."""
    element = registrar.element
    wall = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc).timestamp()
    element.registrar.clock = Clock(element.registrar.clock.monotonic, lambda: wall)
    response = registrar.client().register("alice", "secret", expires=300)
    assert response.status == 200
    assert response.headers.get("Date") == "Tue, 06 May 2031 07:08:09 GMT"
    (stored,) = bindings.current(registrar.core.db, now(), "alice")
    assert stored.expires_at == datetime(2031, 5, 6, 7, 13, 9)


def test_bindings_survive_a_restart(sip_process):
    server = sip_process()
    server.cli("user", "add", "alice", "--password", "secret")
    client = server.client()
    assert client.register("alice", "secret", expires=300).status == 200  # a new binding
    assert client.register("alice", "secret", expires=3000).status == 200  # a (grouped) refresh
    assert server.core.stop() == 0
    again = sip_process()  # same data_dir, so the same database
    response = again.client().register("alice", "secret", contact="", expires=None)
    (contact,) = response.contacts
    assert contact.uri == f"sip:alice@{client.host}:{client.port};transport=udp"
    assert 2990 <= contact.expires <= 3000


def test_password_change_and_account_deletion(registrar):
    client = registrar.client()
    assert client.register("alice", "secret").status == 200
    registrar.core.set_password("alice", "new secret")
    assert client.register("alice", "secret").status == 401  # the cached HA1 was dropped
    assert client.register("alice", "new secret").status == 200
    registrar.core.delete_account("alice")
    assert registrar.element.location.contacts("alice") == []
    assert not registrar.core.presence.presence(registrar.core.address("alice")).available
    assert ("alice", 0) in [(n, e) for n, _, e in registrar.seen.seen]


def test_refreshes_arriving_together_are_stored_before_their_200(registrar):
    phones = [registrar.client() for _ in range(20)]
    for phone in phones:
        assert phone.register("alice", "secret", expires=300).status == 200
    pending = []
    for phone in phones:  # every refresh is sent before any 200 is read
        contact = f"<sip:alice@{phone.host}:{phone.port};transport=udp>"
        request = phone.request("REGISTER", headers=[("Contact", contact), ("Expires", "900")])
        challenge = phone.ask(request)
        again = phone.authorize(request, challenge, "alice", "secret")
        phone.send(again)
        pending.append((phone, again))
    for phone, request in pending:
        response = phone.final(request)
        assert response.status == 200
        mine = [c for c in response.contacts if c.uri.endswith(f":{phone.port};transport=udp")]
        assert len(mine) == 1 and mine[0].expires > 800
    stored = bindings.current(registrar.core.db, now(), "alice")
    assert len(stored) == 20
    assert all((b.expires_at - now()).total_seconds() > 800 for b in stored)
