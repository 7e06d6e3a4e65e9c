"""A real Prosody (Debian package ``prosody``) for the federation tests, run by the test with a
private configuration in a temporary directory: its c2s and s2s listeners on free loopback ports,
its own self-signed certificate for its domain, plain-text accounts written straight into its
data directory, its log on stdout.

How the two servers find each other without touching the machine's DNS or /etc/hosts:

- Convergence finds Prosody's domain through ``[xmpp] s2s_hosts``;
- Prosody 0.12 has no per-domain override and always connects to port 5269, but for a domain
  that is an IP literal it skips DNS and connects to that address (``net.resolvers.service``,
  ``basic``). So the Convergence server under test serves a domain that is a loopback address
  picked at random in 127.0.0.0/8 (say ``127.83.4.17``) with ``s2s_listen`` on that address's
  port 5269: Linux routes all of 127/8 to the loopback interface, and a bind there needs no
  privilege. :func:`loopback_domain` picks one whose port 5269 is free.
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from convergence import certificates
from convergence.testing import ServerProcess, free_port

PROSODY = shutil.which("prosody")

CONFIG = """\
run_as_root = true
daemonize = false
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
plugin_paths = {{}}
log = {{ {{ levels = {{ min = "debug" }}, to = "console" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
s2s_ports = {{ {s2s} }}
http_ports = {{ }}
https_ports = {{ }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "tls", "dialback", "disco", "ping", "offline",
                    "presence", "message", "iq" }}
modules_disabled = {{ "s2s_bidi" }}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {secure_auth}
VirtualHost "{domain}"
    ssl = {{ certificate = "{cert}", key = "{key}"{cafile} }}
"""


def loopback_domain() -> str:
    """A random 127.a.b.c whose port 5269 is free now (see the module docstring)."""
    rng = random.Random()
    for _ in range(100):
        address = f"127.{rng.randrange(1, 255)}.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}"
        with socket.socket() as s:
            try:
                s.bind((address, 5269))
            except OSError:
                continue
        return address
    raise RuntimeError("no loopback address with a free port 5269")


class Prosody:
    """``prosody -F`` with its own configuration; ``output`` collects its log lines, ``wait_for(text)``
    waits for one (from index ``start``)."""

    def __init__(self, directory: Path, domain: str = "prosody.test", accounts: dict | None = None,
                 secure_auth: bool = False, cafile: Path | None = None,
                 cert: tuple[Path, Path] | None = None):
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
        (directory / "prosody.cfg.lua").write_text(CONFIG.format(
            dir=directory, c2s=self.port, s2s=self.s2s_port, domain=domain, cert=self.cert,
            key=self.key, secure_auth="true" if secure_auth else "false", cafile=trusted))
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
