"""The SIP plugin's object for one core: builds the element from its parts and takes the core's
hooks for it.

``on_startup`` (``__init__.py``) builds one per core and registers it on that core's plugin
manager as ``sip:server``; tests reach the running parts through
``core.pm.get_plugin("sip:server")``. Each part gets exactly what it uses, built in this order
(an arrow only points back to what exists already):

- one :class:`~.transport.Clock` (monotonic and wall time) and the timer wheel
  (:class:`~.transport.Timers`) on it; the :class:`~.transport.Transport` (sockets, flows);
- :class:`~.dispatcher.Names` (the machine's names are looked up here, on the I/O side, only
  when listening on all addresses); the transaction layer
  (:class:`~.dispatcher.Transactions`) with this server's T1/T2 (:class:`~.transaction.Timing`);
- the :class:`~.authentication.Authenticator`, the location service
  (:class:`~.location.Location`: accounts of AORs, live bindings, their flows);
- :class:`~.messaging.Messaging`, then the :class:`~.registrar.Registrar` (its bindings deliver
  through messaging's ``send``), the :class:`~.proxy.Proxy`, the presence agent
  (:class:`~.presence.PresenceAgent`: SUBSCRIBE, NOTIFY, PUBLISH);
- the :class:`~.dispatcher.Dispatcher`, last, given to the transport as the receiver of what it
  reads (``Transport.receive_with``).

``add_listeners`` returns the UDP, TCP and optional TLS listeners; ``on_account`` drops cached
digest secrets and a deleted account's bindings; ``on_presence`` sends the account's watchers a
NOTIFY, ``on_register`` ends the publication of a binding that is gone; ``on_shutdown`` (and, while
the UDP socket is still open, the transport's ``closing``) ends the subscriptions, writes the
refreshes still waiting, stops the timers and unregisters the object.
"""
from __future__ import annotations

import logging

from convergence import hookimpl
from convergence.certificates import files, server_context

from .authentication import Authenticator
from .dispatcher import Dispatcher, Names, Transactions, listens_everywhere
from .location import Location
from .message import ParseError, Response, parse_datagram
from .messaging import Messaging
from .metrics import SipCollector
from .presence import PresenceAgent
from .proxy import Proxy
from .registrar import CAST_DROP, Registrar
from .transaction import Timing
from .transport import Clock, Timers, Transport, UdpFlow, machine_names

log = logging.getLogger(__name__)

#: the cast (core/cluster.py) carrying a response to the cluster node whose request it answers
CAST_RESPONSE = "sip.response"


class SipServer:
    """The SIP plugin for one core (registered as ``sip:server`` on its plugin manager)."""

    def __init__(self, core, settings: dict, clock: Clock):
        self.core = core
        tls_context = None
        if settings["tls_listen"]:
            tls_context = server_context(*files(core.domain, core.config.data_dir,
                                                settings["tls_cert"], settings["tls_key"]))
        self.timers = Timers(clock)
        self.transport = Transport(settings, clock, tls_context)
        self.names = Names.of(core.domain, settings,
                              machine_names() if listens_everywhere(settings) else ())
        self.transactions = Transactions(Timing(settings["t1"], settings["t2"]), clock,
                                         self.timers.call_at, self.transport.read_waiting,
                                         self.names.host, self.names.port)
        self.auth = Authenticator(core, settings, clock)
        self.location = Location(core, self.names.hosts, self.transport)
        self.messaging = Messaging(core, settings["max_message_size"], self.transactions,
                                   self.auth, self.location, self.names.host)
        self.registrar = Registrar(core, settings, clock, self.timers.call_at, self.auth,
                                   self.location, self.messaging.send)
        self.proxy = Proxy(core.db, self.transactions, self.auth, self.location, self.transport,
                           self.names)
        self.presence = PresenceAgent(core, settings, clock, self.timers.call_at,
                                      self.transactions, self.auth, self.location, self.names)
        self.dispatcher = Dispatcher(self.transactions, self.names, settings["max_message_size"],
                                     clock, self.registrar.handle, self.messaging.handle,
                                     self.proxy, {"SUBSCRIBE": self.presence.subscribe,
                                                  "PUBLISH": self.presence.publish})
        self.transport.receive_with(self.dispatcher.datagram, self.dispatcher.receive,
                                    self.dispatcher.refuse)
        self.transport.closing = self.presence.shutdown
        if core.cluster is not None:  # answers to this node's requests that reach another worker
            self.transactions.tag_with(core.cluster.tag)
            self.dispatcher.elsewhere = self._forward_response
        self.registrar.restore()
        self.timers.start()

    @hookimpl
    def add_listeners(self):
        return self.transport.listeners()

    def _forward_response(self, response, via, flow) -> bool:
        """A response over UDP to a request another cluster node sent (its branch carries the
        node's tag): the kernel gave it to this worker (SO_REUSEPORT hashes the phone's address,
        which can differ from the one its REGISTER came from, or the set of workers changed).
        Handed to that node as the ``sip.response`` cast; False if no other node's."""
        cluster = self.core.cluster
        node = None if flow.reliable else cluster.node_of_tag(Transactions.node_tag_of(via.branch))
        if node is None or node == cluster.node_id:
            return False
        log.info("SIP: a %d response from %s:%s answers node %s: handed to it", response.status,
                 *flow.peer[:2], node)
        cluster.cast({node}, CAST_RESPONSE, {"data": bytes(response).decode("latin-1"),
                                             "peer": list(flow.peer[:2])})
        return True

    @hookimpl
    def on_cluster_cast(self, kind, data):
        """A response another worker received for one of this node's client transactions, or a
        binding of this node that a REGISTER on another node removed."""
        if kind == CAST_DROP:
            if isinstance(data.get("account"), str) and isinstance(data.get("contact"), str):
                self.registrar.dropped_elsewhere(data["account"], data["contact"])
            return
        udp = self.transport.udp
        if kind != CAST_RESPONSE or udp is None or udp.socket is None:
            return
        try:
            response = parse_datagram(str(data["data"]).encode("latin-1"))
            peer = (str(data["peer"][0]), int(data["peer"][1]))
        except (KeyError, IndexError, TypeError, ValueError, ParseError) as exc:
            log.warning("SIP: ignored a bad %s cast: %s", CAST_RESPONSE, exc)
            return
        if isinstance(response, Response):
            self.dispatcher.receive(response, UdpFlow(udp.socket, peer))

    @hookimpl
    def on_account(self, account, change):
        self.auth.forget(account.local)
        if change == "deleted":
            self.registrar.forget_account(account.local)
            self.presence.forget_account(account)

    @hookimpl
    def on_presence(self, account):
        self.presence.on_presence(account)

    @hookimpl
    def on_screen_changed(self, account):
        self.presence.screen_changed(account)

    @hookimpl
    def on_register(self, endpoint, expires):
        if not expires and endpoint.protocol == "sip":
            self.presence.binding_gone(endpoint)

    @hookimpl
    def add_metrics(self, registry):
        self.core.metrics.count_failures("sip", self.auth.limiter)
        registry.register(SipCollector(self))

    @hookimpl
    def on_shutdown(self):
        self.presence.shutdown()  # if the listeners were never started
        self.registrar.flush()  # refreshes still waiting for their write and 200
        self.timers.stop()
        self.core.pm.unregister(self)
