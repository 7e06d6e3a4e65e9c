"""The shared context every hook receives as ``core``: config, plugins, store, router, presence."""
from __future__ import annotations

import gevent

from . import cluster, credentials
from .addresses import Address, AddressError, normalize_localpart
from .config import Config
from .control import Control
from .message import Message
from .metrics import Metrics
from .plugin_manager import PluginManager, available
from .presence import PresenceHub
from .router import Router
from .store import Database, accounts


class Core:
    """Build with :meth:`create`; ``core.hook`` calls every plugin's implementation of a hook."""

    def __init__(self, config: Config, pm: PluginManager, db: Database):
        self.config = config
        self.pm = pm
        self.hook = pm.hook
        self.db = db
        db.version_locations += [str(p) for p in pm.hook.add_migrations() if p]
        self.domain: str = config["server"]["domain"]
        self.metrics = Metrics(self)  # this core's registry (core/metrics.py); the router counts into it
        self.router = Router(self)
        self.presence = PresenceHub(self)
        self.control = Control(self)  # account changes to and from other processes
        self.listeners: list | None = None  # the started listeners, once ``serve`` started them all
        self.cluster: cluster.Cluster | None = None  # this process as a cluster member (``serve``)

    @classmethod
    def create(cls, config: Config, db: Database | None = None, load_entry_points: bool = True,
               plugins: dict | None = None) -> Core:
        """Load the plugins (entry points not disabled, plus ``plugins``: name → module/object),
        validate their config sections, open the database (not migrated: see ``db.upgrade``)."""
        server = config["server"]
        pm = PluginManager()
        if load_entry_points:
            known = available()
            for name in server["disabled_plugins"]:
                if name not in known:
                    raise config.error(f"[server] disabled_plugins: unknown plugin {name!r} "
                                        f"(installed: {', '.join(sorted(known))})")
            pm.load_entry_points(server["disabled_plugins"], server["plugin_errors"])
        for name, plugin in (plugins or {}).items():
            pm.register_plugin(plugin, name)
        for section in pm.hook.add_config_section():
            if section is not None:
                config.add_section(section)
        config.add_section(cluster.section())
        config.check_unknown_sections(ignored=set(server["disabled_plugins"]) | pm.skipped)
        return cls(config, pm, db or Database(config.database_url))

    # -- addresses --
    def address(self, local: str, resource: str | None = None) -> Address:
        """The address ``local@<domain>[/resource]``; ``local`` is normalized (AddressError if invalid)."""
        return Address(normalize_localpart(local), self.domain, resource)

    # -- accounts (password-derived secrets only) --
    def _derive(self, address: Address, password: str) -> credentials.Credentials:
        # PBKDF2 is ~2 ms of CPU: the hub's threadpool keeps other connections served meanwhile.
        # Storing and the on_account hook stay on the calling greenlet (hooks are not thread-safe).
        credentials.saslprep(password)  # a refused password raises here, not in the pool
        wanted = {name for names in self.hook.password_secrets(core=self) for name in names or ()}
        return gevent.get_hub().threadpool.apply(credentials.derive, (address.local, self.domain, password),
                                                 {"digest": "digest" in wanted})

    def add_account(self, name: str, password: str, endpoint=None) -> Address:
        """Create ``name@domain``; raises AddressError, PasswordError or AccountExists."""
        address = self.address(name)
        accounts.create(self.db, address.local, self._derive(address, password))
        self._changed(address, "created", endpoint)
        return address

    def set_password(self, name: str, password: str, endpoint=None) -> None:
        """Replace the secrets of ``name``; raises AddressError, PasswordError or NoSuchAccount.
        ``endpoint``: the session that asked (in-band registration), which stays connected."""
        address = self.address(name)
        accounts.set_credentials(self.db, address.local, self._derive(address, password))
        self._changed(address, "changed", endpoint)

    def delete_account(self, name: str, endpoint=None) -> None:
        """Delete ``name`` with its data; raises AddressError or NoSuchAccount. ``endpoint``: the
        session that asked, which the caller ends itself (after answering it)."""
        address = self.address(name)
        accounts.remove(self.db, address.local)
        self._changed(address, "deleted", endpoint)

    def _changed(self, account: Address, change: str, endpoint) -> None:
        """The change is committed: this process's plugins react, then other processes hear of it."""
        self.hook.on_account(core=self, account=account, change=change, endpoint=endpoint)
        self.control.publish(account, change)

    def check_password(self, name: str, password: str) -> bool:
        """SASL PLAIN / HTTP Basic: verify against the stored SCRAM-SHA-256 keys."""
        try:
            name = self.address(name).local
        except AddressError:
            return False
        creds = accounts.credentials(self.db, name)
        return creds is not None and credentials.verify(creds, password)

    # -- messages --
    def send(self, message: Message, source: str = "other") -> str:
        """Route ``message`` (see :meth:`convergence.router.Router.route`); ``source`` names the
        protocol it came in by (the protocol plugin's name; ``"service"`` for what a service user
        answers), for the metrics."""
        return self.router.route(message, source)

    @property
    def database_location(self) -> str:
        """The database URL without its password, a SQLite file's path made absolute (a relative
        ``data_dir`` means another database in another folder)."""
        return self.db.location

    def close(self) -> None:
        self.db.close()

