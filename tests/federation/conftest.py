"""Fixtures of the federation tests: ``federated(domain, accounts, s2s_hosts, **sections)`` starts
a ``convergence serve`` for ``domain`` with ``[xmpp] s2s_listen`` on a free loopback port (or the
``s2s_listen`` given) and returns a :class:`FederatedServer` (an ``XmppServer`` of
``scenario_kit`` whose ``domain``, ``jid`` and ``cert`` are that domain's; ``s2s_port``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from convergence.testing import free_port
from scenario_kit import XmppServer


class FederatedServer(XmppServer):
    def __init__(self, serve, tmp_path: Path, database_url: str, domain: str, accounts: dict,
                 s2s_hosts: dict, sections: dict):
        xmpp = dict(sections.get("xmpp", {}))
        self.s2s_listen = xmpp.pop("s2s_listen", None) or f"127.0.0.1:{free_port()}"
        self.s2s_port = int(self.s2s_listen.rpartition(":")[2])
        xmpp.update({"s2s_listen": self.s2s_listen, "s2s_hosts": s2s_hosts})
        server = {"domain": domain, **sections.get("server", {})}
        super().__init__(serve, tmp_path, database_url, accounts, {**sections, "xmpp": xmpp,
                                                                    "server": server})
        self.domain = domain
        self.cert = Path(self.config["server"]["data_dir"]) / "tls" / f"{domain}.crt"


@pytest.fixture
def federated(serve, tmp_path, database_url):
    started = []

    def start(domain: str, accounts: dict | None = None, s2s_hosts: dict | None = None,
              **sections) -> FederatedServer:
        started.append(FederatedServer(serve, tmp_path / f"f{len(started)}", database_url, domain,
                                       accounts or {}, s2s_hosts or {}, sections))
        return started[-1]

    yield start
    for server in started:
        server.close()
