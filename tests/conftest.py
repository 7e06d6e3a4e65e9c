"""Fixtures for scenario tests; what they return is documented in ``scenario_kit``."""
from __future__ import annotations

import asyncio

import pytest
import slixmpp

from scenario_kit import Client, LoginFailed, Loop, RawClient, XmppServer

#: Interop with stock clients and peers (baresip, linphonec, SIPp presence, Prosody, two federating
#: servers): what they check is the wire, not the store, whose SQL runs on PostgreSQL in the other
#: tests. They run in the SQLite pass only, so the two passes .ci/run starts side by side finish
#: together (the PostgreSQL pass also has tests/cluster, which needs PostgreSQL).
INTEROP = ("tests/federation/", "tests/sip/test_stock_phones.py", "tests/sip/test_presence_clients.py")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("convergence_database"):
        return
    skip = pytest.mark.skip(reason="interop with stock clients: runs in the SQLite pass (tests/conftest.py)")
    for item in items:
        if any(part in item.nodeid for part in INTEROP):
            item.add_marker(skip)


@pytest.fixture
def raw_client():
    clients = []

    def connect(server: XmppServer) -> RawClient:
        clients.append(RawClient(server))
        return clients[-1]
    yield connect
    for client in clients:
        client.sock.close()


@pytest.fixture
def convergence_server(serve, tmp_path, database_url):
    started = []

    def start(accounts: dict | None = None, **sections) -> XmppServer:
        started.append(XmppServer(serve, tmp_path / f"s{len(started)}", database_url,
                                   accounts or {}, sections))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def xmpp_server(convergence_server):
    return lambda accounts=None, **xmpp: convergence_server(accounts, xmpp=xmpp)


@pytest.fixture
def client_loop():
    loop = Loop()
    yield loop
    loop.stop()


@pytest.fixture
def xmpp_client(client_loop):
    clients = []

    def connect(server: XmppServer, name: str, password: str | None = None, resource: str = "test",
                mechanism: str | None = None, presence: bool = True, roster: bool = False,
                direct_tls: bool = False, timeout: float = 10, plugins: tuple = ()) -> Client:
        password = server.passwords.get(name, "") if password is None else password

        async def start():
            config = {"feature_mechanisms": {"use_mech": mechanism}} if mechanism else {}
            xmpp = slixmpp.ClientXMPP(server.jid(name, resource), password, plugin_config=config)
            for plugin in ("xep_0030", "xep_0092", "xep_0199", "xep_0280", *plugins):
                xmpp.register_plugin(plugin)
            xmpp.enable_direct_tls, xmpp.enable_starttls = direct_tls, not direct_tls
            xmpp.ca_certs = server.cert
            client = Client(client_loop, xmpp)
            clients.append(client)
            started = client_loop.loop.create_future()

            async def session_start(_):
                if roster:
                    await xmpp.get_roster()
                if presence:  # return once the server has processed it: it echoes it (RFC 6121 §4.2.2)
                    echoed = client_loop.loop.create_future()

                    def own(stanza):
                        if str(stanza["from"]) == str(xmpp.boundjid) and not echoed.done():
                            echoed.set_result(True)
                    xmpp.add_event_handler("presence", own)
                    xmpp.send_presence()
                    await echoed
                    xmpp.del_event_handler("presence", own)
                started.done() or started.set_result(True)

            def failed(reason):
                started.done() or started.set_exception(LoginFailed(str(reason)))
            xmpp.add_event_handler("session_start", session_start)
            xmpp.add_event_handler("failed_all_auth", failed)
            xmpp.add_event_handler("disconnected", failed)
            xmpp.connect("127.0.0.1", server.tls_port if direct_tls else server.port)
            await asyncio.wait_for(started, timeout)
            return client
        return client_loop.run(start, timeout=timeout + 2)

    yield connect
    for client in clients:
        try:
            client.disconnect()
        except Exception:  # already gone (the test closed it, or the server did)
            pass
