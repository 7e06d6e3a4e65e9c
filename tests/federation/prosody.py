"""A real Prosody (Debian package ``prosody``) for the federation tests, run by the test with a
private configuration in a temporary directory: its c2s and s2s listeners on free loopback ports,
its own self-signed certificate for its domain, plain-text accounts written straight into its
data directory, its log on stdout.

How the two servers find each other without DNS, /etc/hosts or any change to the machine:

- Convergence finds Prosody's domain through ``[xmpp] s2s_hosts``;
- Prosody 0.12 has no such setting (it asks DNS, and connects to port 5269 of an IP-literal
  domain), so the test gives it one: ``mod_test_s2s_hosts`` (the ``MODULE`` below, written into
  the Prosody's own ``plugin_paths``) wraps ``net.resolvers.service.new`` so that the domains in
  its ``test_s2s_hosts`` option resolve to a fixed address and port (``peers``) and have no
  Direct TLS service, while every other domain resolves as usual.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from convergence import certificates
from convergence.testing import ServerProcess, free_port

PROSODY = shutil.which("prosody")
OURS = "convergence.test"  # the domain of the Convergence server the tests federate with Prosody

CONFIG = """\
run_as_root = true
daemonize = false
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
plugin_paths = {{ "{dir}/plugins" }}
test_s2s_hosts = {{ {peers} }}
log = {{ {{ levels = {{ min = "debug" }}, to = "console" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
s2s_ports = {{ {s2s} }}
http_ports = {{ }}
https_ports = {{ }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "tls", "dialback", "disco", "ping", "offline",
                    "presence", "message", "iq", "test_s2s_hosts"{modules} }}
modules_disabled = {{ "s2s_bidi" }}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {secure_auth}
VirtualHost "{domain}"
    ssl = {{ certificate = "{cert}", key = "{key}"{cafile} }}
"""


MODULE = """\
-- Test only: the domains of the option test_s2s_hosts = { ["domain"] = { "address", port } }
-- are found at that address (as Convergence's [xmpp] s2s_hosts), with no Direct TLS service.
local service = require "net.resolvers.service";
local basic = require "net.resolvers.basic";
local hosts = module:get_option("test_s2s_hosts", {});
local none = { next = function(_, callback) callback(nil); end };
local original = service._original_new or service.new;
service._original_new = original;
function service.new(hostname, name, conn_type, extra)
    local target = hosts[hostname];
    if not target then
        return original(hostname, name, conn_type, extra);
    end
    if name ~= "xmpp-server" then
        return setmetatable({}, { __index = none });
    end
    return basic.new(target[1], target[2], conn_type, extra);
end
"""


class Prosody:
    """``prosody -F`` with its own configuration; ``output`` collects its log lines, ``wait_for(text)``
    waits for one (from index ``start``)."""

    def __init__(self, directory: Path, domain: str = "prosody.test", accounts: dict | None = None,
                 peers: dict[str, int] | None = None, secure_auth: bool = False,
                 cafile: Path | None = None, cert: tuple[Path, Path] | None = None,
                 modules: tuple[str, ...] = ()):
        """``peers``: domain -> port on 127.0.0.1 where Prosody finds that domain's s2s listener;
        ``modules``: more Prosody modules to load (e.g. ``pep``)."""
        self.dir = directory
        self.domain = domain
        self.passwords = dict(accounts or {})
        self.port, self.s2s_port = free_port(), free_port()
        self.tls_port = None
        directory.mkdir(parents=True, exist_ok=True)
        if cert is None:
            cert = (directory / f"{domain}.crt", directory / f"{domain}.key")
            certificates.generate(domain, *cert)
        self.cert, self.key = cert
        trusted = f', cafile = "{cafile}"' if cafile else ""
        (directory / "plugins").mkdir(exist_ok=True)
        (directory / "plugins" / "mod_test_s2s_hosts.lua").write_text(MODULE)
        peers = " ".join(f'["{name}"] = {{ "127.0.0.1", {port} }};' for name, port in (peers or {}).items())
        (directory / "prosody.cfg.lua").write_text(CONFIG.format(
            dir=directory, c2s=self.port, s2s=self.s2s_port, domain=domain, cert=self.cert,
            key=self.key, secure_auth="true" if secure_auth else "false", cafile=trusted,
            peers=peers, modules="".join(f', "{name}"' for name in modules)))
        accounts_dir = directory / "data" / domain.replace(".", "%2e") / "accounts"
        accounts_dir.mkdir(parents=True, exist_ok=True)
        for name, password in self.passwords.items():
            (accounts_dir / f"{name}.dat").write_text(f'return {{ ["password"] = "{password}"; }};\n')
        self.proc = None
        self.output: list[str] = []
        self._more = threading.Condition()
        self.start()

    @property
    def s2s_address(self) -> str:
        return f"127.0.0.1:{self.s2s_port}"

    def jid(self, name: str, resource: str | None = None) -> str:
        return f"{name}@{self.domain}" + (f"/{resource}" if resource else "")

    def start(self) -> None:
        """Start it (again: ``stop`` then ``start`` is a restart on the same data and ports)."""
        self._mark = len(self.output)
        self.proc = subprocess.Popen([PROSODY, "--config", str(self.dir / "prosody.cfg.lua"), "-F"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=self.dir, env={**os.environ, "HOME": str(self.dir)})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._wait_listening()

    def _wait_listening(self, timeout: float = 15) -> None:
        """Until its log says both listeners are up (or it exited)."""
        try:
            self.wait_for(f"Activated service 'c2s' on [127.0.0.1]:{self.port}", timeout, start=self._mark)
            self.wait_for(f"Activated service 's2s' on [127.0.0.1]:{self.s2s_port}", timeout, start=self._mark)
        except AssertionError:
            self.stop()
            raise RuntimeError("prosody did not start:\n" + "".join(self.output[-30:])) from None

    # the log reader, waiting for a line and stopping are those of a ``convergence serve`` process
    _read, wait_for = ServerProcess._read, ServerProcess.wait_for

    def stop(self) -> None:
        if self.proc is not None:
            ServerProcess.stop(self)
