"""The presence hub: endpoints in, combined per-account presence out (RFC 6121 §4.7)."""
from convergence import Presence, hookimpl
from convergence.testing import RecordingEndpoint


class Watcher:
    def __init__(self):
        self.seen = []

    @hookimpl
    def on_presence(self, account, presence):
        self.seen.append((account.jid, presence.available, presence.show))


def test_login_logout_changes_combined_presence(core, register_plugin):
    watcher = register_plugin(Watcher(), "watcher")
    alice = core.address("alice")
    phone = RecordingEndpoint(alice.with_resource("phone"), presence=Presence(show="away"))
    desk = RecordingEndpoint(alice.with_resource("desk"))
    core.presence.login(phone)
    core.presence.login(desk)  # best of both: plain available beats away
    core.presence.logout(desk)
    core.presence.logout(phone)
    assert watcher.seen == [("alice@localhost", True, "away"), ("alice@localhost", True, None),
                            ("alice@localhost", True, "away"), ("alice@localhost", False, None)]
    assert not core.presence.presence(alice).available


def test_update_and_unchanged_presence_is_not_renotified(core, register_plugin):
    watcher = register_plugin(Watcher(), "watcher")
    phone = RecordingEndpoint(core.address("alice", "phone"))
    core.presence.login(phone)
    core.presence.update(phone)
    phone.presence = Presence(show="dnd")
    core.presence.update(phone)
    assert [s[2] for s in watcher.seen] == [None, "dnd"]


def test_an_endpoint_that_moves_to_another_node_is_replaced_without_a_change(core, register_plugin):
    """``replace`` (core/cluster.py ``moved``: a session resumed on another cluster node): the
    other endpoint stands for the same address, no on_login/on_logout, no presence change; an
    endpoint the hub does not have is not replaced."""
    class Events(Watcher):
        @hookimpl
        def on_login(self, account, endpoint):
            self.seen.append("login")

        @hookimpl
        def on_logout(self, account, endpoint):
            self.seen.append("logout")

    watcher = register_plugin(Events(), "watcher")
    phone = RecordingEndpoint(core.address("alice", "phone"), presence=Presence(show="away"))
    core.presence.login(phone)
    moved = RecordingEndpoint(core.address("alice", "phone"), presence=Presence(show="away"))
    core.presence.replace(phone, moved)
    core.presence.replace(phone, RecordingEndpoint(core.address("alice", "phone")))  # not there any more
    assert core.presence.endpoints(core.address("alice")) == [moved]
    assert watcher.seen == ["login", ("alice@localhost", True, "away")]


def test_sip_registration_counts_as_available(core):
    binding = RecordingEndpoint(core.address("sipuserf", "sip-1"), "sip")
    core.presence.register(binding, 300)
    assert core.presence.presence(core.address("sipuserf")).available
    core.presence.unregister(binding)
    assert core.presence.online() == [core.address("echo")]


def test_logout_of_an_unknown_or_replaced_endpoint_is_ignored(core):
    old = RecordingEndpoint(core.address("alice", "r"))
    new = RecordingEndpoint(core.address("alice", "r"))
    core.presence.login(old)
    core.presence.login(new)  # same resource: the new session replaces the old
    core.presence.logout(old)
    assert core.presence.endpoints(core.address("alice")) == [new]


def test_register_with_zero_expires_removes_the_binding(core):
    binding = RecordingEndpoint(core.address("sipuserf", "sip-1"), "sip")
    core.presence.register(binding, 300)
    core.presence.register(binding, 0)
    assert core.presence.endpoints(core.address("sipuserf")) == []
