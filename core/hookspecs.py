"""THE plugin contract: every hook a Convergence plugin may implement.

A plugin is a module (or object) with functions decorated ``@hookimpl`` whose names are the hooks
below; it takes any subset of each hook's arguments. Plugins are found through the
``convergence.plugins`` entry-point group, bundled ones exactly like third-party ones. Hooks are
called synchronously on the server's event loop: an implementation must not block (spawn a
greenlet for slow work). The same nouns are used everywhere:

- ``core``: the :class:`convergence.core.Core` (config, store, router, presence).
- ``account``: the bare :class:`~convergence.addresses.Address` of a local account.
- ``endpoint``: an :class:`~convergence.presence.Endpoint` (an XMPP resource, a SIP binding, an
  HTTP stream) through which an account is reachable.
- ``message``: a :class:`~convergence.message.Message`.
- ``address``: an :class:`~convergence.addresses.Address`.
"""
import pluggy

hookspec = pluggy.HookspecMarker("convergence")
hookimpl = pluggy.HookimplMarker("convergence")


# ---- configuration and lifecycle ---------------------------------------------------------------

@hookspec
def add_config_section():
    """Declare the plugin's configuration table.

    Return a :class:`convergence.config.Section` (its name is the TOML table, by convention the
    plugin's name) or None. Keys found in the file are type-checked against it; defaults fill the
    rest. The values are read back as ``core.config[section][key]``.
    """


@hookspec
def add_cli_commands(cli):
    """Add ``click`` commands or groups to the ``convergence`` command line with ``cli.add_command``."""


@hookspec
def on_startup(core):
    """The store is migrated and every plugin is loaded; the listeners start right after.

    Use it to set up state that needs the core (claim service users' presence, spawn timers).
    """


@hookspec
def add_migrations():
    """Return the folder (a path) of the plugin's own Alembic revisions, or None.

    For plugins with tables of their own. The revisions form a branch of their own
    (``branch_labels = ("<plugin>",)``, the first with ``down_revision = None`` and
    ``depends_on = "0001"``); ``serve`` and ``db upgrade`` migrate every branch to its head.
    Models are declared on ``convergence.store.models.Base`` in the plugin (docs/plugins.md).
    """


@hookspec
def add_listeners(core):
    """Return a list of gevent servers (``StreamServer``, ``DatagramServer``, ``WSGIServer``).

    ``convergence serve`` starts them after ``on_startup`` and stops them at shutdown. Every TCP
    accept path must set ``TCP_NODELAY`` (see :mod:`convergence.listeners`).
    """


@hookspec
def add_blueprints(core):
    """Return a list of Flask ``Blueprint`` objects to mount on the HTTP listener."""


@hookspec
def add_metrics(core, registry):
    """Register the plugin's metrics on this core's ``prometheus_client.CollectorRegistry``.

    Called once per core, when its registry is first read (``GET /metrics``, ``convergence
    status``), after ``on_startup``. Never use prometheus_client's default registry: several cores
    share a process. Prefer a collector that reads the plugin's objects at scrape time (``collect``
    yielding metric families) to counting on hot paths. Failed logins go to
    ``core.metrics.count_failures(protocol, limiter)`` instead, so every protocol shares one family.
    """


@hookspec
def on_shutdown(core):
    """The listeners have stopped; release what ``on_startup`` took. The store is still open."""


# ---- routing -----------------------------------------------------------------------------------

@hookspec(firstresult=True)
def resolve_recipient(core, address):
    """Say where messages for ``address`` go; the first non-None answer wins.

    Return a route: any object with a ``deliver(message)`` method that returns
    ``"delivered"``, ``"stored"`` (kept for later) or ``"discarded"`` (RFC 6121 §8.5.2.2.1: an
    ``error`` message for an offline account) or raises :class:`convergence.message.RoutingError`.
    Return None to let other plugins (and finally the core's local-account route) decide.
    The core's own local-account route is ``trylast``, so every plugin answers before it;
    ``tryfirst=True`` orders a plugin before other plugins.
    """


@hookspec
def screen_message(core, message, source):
    """Refuse ``message`` before it is delivered or stored: raise
    :class:`convergence.message.RoutingError` to refuse it, return anything to let it pass.

    Every implementation is called (the first to raise wins), once the recipient resolved to a
    route and before ``deliver``; ``source`` is the name of the protocol it came by, as the
    sending plugin gave it to ``core.send``, so a plugin may answer each as its protocol expects.
    The sender gets the condition through its own protocol's mapping (docs/plugins.md; a block
    list, XEP-0191, refuses with ``forbidden``). It runs for every message:
    answer from memory, never from the store on the hot path.

    A stored message (XEP-0160) is screened again when the router delivers the backlog at login,
    with ``source`` ``"offline"``: refused then, it is dropped from the store (a block made after
    it was stored).
    """


@hookspec
def screen_presence(core, watcher, account):
    """Whether to keep the presence of the local ``account`` from ``watcher`` (a bare address)
    whatever the rosters say: return True to keep it from it, anything else to let the rosters
    decide. Any True wins (a block list, XEP-0191). ``convergence.contacts.sees`` asks it, so
    every protocol that shows presence through it obeys it. Answer from memory.
    """


@hookspec
def on_screen_changed(core, account):
    """What ``screen_presence`` answers for the local ``account`` changed (in either direction:
    who may see it, whom it may see), in this process or, in a cluster, on another node.
    A plugin that keeps watchers of its own (subscriptions) asks again for the watchers of
    ``account`` and for those ``account`` watches. Return value ignored.
    """


@hookspec
def on_message(core, message):
    """An observer: ``message`` was accepted by the router (delivered, stored or discarded).

    The return value is ignored. Do not block: spawn for slow work (archives, forwarders, metrics).
    """


# ---- service users and the shared roster -------------------------------------------------------

@hookspec
def service_users(core):
    """The plugin's service users: account-less addresses of the domain that answer messages (echo,
    the HTTP user, a bot).

    Return an iterable of :class:`~convergence.addresses.Address`, or None. The plugin claims each
    one in ``resolve_recipient`` and sets its presence with ``core.presence.set_service``. The
    shared roster lists them as contacts of every account, and they approve every presence
    subscription request (RFC 6121 §3.1). Asked at each roster read and subscription: answer from
    the configuration, not from run-time state (the command line asks too, without ``on_startup``).
    """


@hookspec(firstresult=True)
def share_roster(core):
    """Whether the shared roster is on: every account has every other account of the domain and
    every service user as a contact with subscription ``both`` (RFC 6121 §2.1.2.5), group "Friends".

    Return True or False, or None to let another plugin answer; with no answer it is on. Asked at
    each roster read and presence broadcast: answer from the configuration.
    """


# ---- accounts, sessions and bindings -----------------------------------------------------------

@hookspec
def on_account(core, account, change, endpoint):
    """An account was ``"created"``, ``"deleted"`` or its password ``"changed"`` (``change``).

    Fired in the process that made the change and, through the control path
    (:mod:`convergence.control`), in every running server. A server ends the live sessions of a
    deleted account, and those that authenticated with the old password. ``endpoint`` is the
    session that asked for the change (in-band registration): it is left alone, its owner
    answers and ends it. It is None for a change made elsewhere (the CLI, another process).
    """


@hookspec
def password_secrets(core):
    """Which password-derived secrets, besides the SCRAM keys, the plugin needs stored.

    Return an iterable of names, or None. ``"digest"`` is the HA1 of HTTP/SIP digest (RFC 7616
    §3.4.2, RFC 3261 §22.4), which is password-equivalent for digest. Asked each time a password
    is set (account created or password changed), by ``serve`` and the command line alike; a
    secret no plugin asks for is not stored.
    """


@hookspec
def on_login(core, account, endpoint):
    """An endpoint of ``account`` came online through a login (an XMPP session, an HTTP stream)."""


@hookspec
def on_logout(core, account, endpoint):
    """A logged-in endpoint of ``account`` went away (clean close, timeout or lost connection)."""


@hookspec
def on_register(core, account, endpoint, expires):
    """A SIP binding (RFC 3261 §10) of ``account`` was added, refreshed, expired or removed.

    ``expires`` is the number of seconds the binding remains valid; 0 means it is gone.
    """


@hookspec
def on_presence(core, account, presence):
    """The combined availability of ``account`` (or of a service user) changed.

    ``presence`` is a :class:`convergence.presence.Presence`: the best of the account's endpoints.
    """


@hookspec
def on_subscription_request(core, account, contact):
    """``account`` asked to see the presence of ``contact`` (both local, bare) from a protocol
    that keeps no roster of its own, and the roster does not allow it yet (a SIP SUBSCRIBE that
    was answered ``pending``, RFC 8048 §4).

    A plugin that keeps rosters puts the request to ``contact`` as if ``account`` had sent a
    presence subscription request (RFC 6121 §3.1): stored, and shown to ``contact``'s clients.
    The return value is ignored.
    """


# ---- clusters ------------------------------------------------------------------------------------

@hookspec
def on_cluster_cast(core, kind, data):
    """Another cluster node cast ``data`` to this one (``core.cluster.cast``, core/cluster.py):
    what a plugin's own endpoints on this node must see of something handled on that node —
    not a message (messages go by hand-off, confirmed), but e.g. an XMPP roster push or presence
    stanza for a session here.

    ``kind`` is the name the sender gave (prefixed with the plugin's name, ``xmpp.stanza``);
    ``data`` the JSON object it sent. Casts from one node arrive in the order it cast them, and
    in order with its hand-offs; they are best-effort (none while Redis is unreachable). Do not
    block for long (the node's hand-offs wait behind it).

    The return value of a cast is ignored. A *hand-over* (``core.cluster.hand_over``) comes the
    same way but is confirmed: the plugin that takes ``kind`` returns ``"delivered"`` (or
    ``"stored"``), or raises RoutingError to refuse it; the sender gets that answer.
    """


@hookspec
def on_cluster_node_lost(core, node):
    """Cluster node ``node`` left: its heartbeat expired (killed, cut off) or it stopped. Its
    endpoints have left the presence hub already (``on_logout``/``on_register`` fired for each),
    and what it owned (``core.cluster.owner``) goes to the next node that uses it. A plugin tells
    its endpoints here what they lost with it (an XMPP room the node held). Return value ignored.
    """


@hookspec
def on_cluster_resync(core):
    """In a cluster, casts may have been missed: this node's subscription to Redis was down and is
    back (casts to it found nobody listening), or another node could not reach Redis for a while
    and is back (what it cast meanwhile was never sent). A plugin that caches state kept current
    by casts re-reads it here (from the database) and does for what changed what it does on a
    cast (the XMPP plugin's block lists, XEP-0191). Runs in a greenlet of its own, after the
    subscription is in place again; the return value is ignored.
    """
