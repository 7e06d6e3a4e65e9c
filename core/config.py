"""One TOML file → typed settings. ``[server]`` is the core's; each plugin declares its own table.

A plugin returns a :class:`Section` from the ``add_config_section`` hook; keys in the file are
checked against it (unknown key, wrong type → :class:`ConfigError`) and defaults fill the rest.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

from .addresses import AddressError, normalize_domain


class ConfigError(Exception):
    """One line naming the file, the key and what was expected."""


_TYPE_NAMES = MappingProxyType({bool: "a boolean", int: "an integer", float: "a number",
                                str: "a string", list: "a list of strings"})


@dataclass(frozen=True)
class Option:
    """One configuration key: its default, a help line, and optionally ``parse``.

    ``parse(value)`` converts the TOML value or raises ``ValueError("expected …")``; without it the
    value must have the default's type (a list default means a list of strings).
    """

    default: Any
    help: str
    parse: Callable[[Any], Any] | None = None

    def convert(self, value):
        if self.parse:
            return self.parse(value)
        kind = type(self.default)
        ok = (isinstance(value, kind) and not (kind is int and isinstance(value, bool))) or (
            kind is float and isinstance(value, int) and not isinstance(value, bool))
        if kind is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise ValueError(f"expected {_TYPE_NAMES.get(kind, kind.__name__)}")
        return float(value) if kind is float else value


@dataclass(frozen=True)
class Section:
    """A TOML table: ``name`` (the plugin's name by convention) and its options."""

    name: str
    options: dict[str, Option]
    help: str = ""


# ---- parsers for option values ----------------------------------------------------------------

def listen_address(value) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:5060"`` for IPv6) → ``(host, port)``."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError('expected "host:port"')
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError('expected "host:port" with a port from 0 to 65535')
    return host, int(port)


def optional_listen_address(value) -> tuple[str, int] | None:
    """``""`` (off: None) or ``"host:port"``."""
    return None if value == "" else listen_address(value)


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value):
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(f'"{c}"' for c in choices))
        return value
    return parse


def positive_int(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError("expected a positive integer")
    return value


def positive_number(value) -> float:
    """A positive int or float (seconds, say) → float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError("expected a positive number")
    return float(value)


def non_negative_number(value) -> float:
    """Zero (off) or a positive number of seconds → float."""
    return 0.0 if value == 0 and not isinstance(value, bool) else positive_number(value)


def worker_count(value) -> int:
    """A positive number of worker processes, or ``"auto"``: one per CPU core."""
    if value == "auto":
        return os.cpu_count() or 1
    try:
        return positive_int(value)
    except ValueError:
        raise ValueError('expected a positive integer or "auto"') from None


def domain_name(value) -> str:
    try:
        return normalize_domain(value if isinstance(value, str) else "")
    except AddressError as exc:
        raise ValueError("expected a domain name") from exc


SERVER = Section("server", {
    "domain": Option("localhost", "the domain every account lives in (JID and SIP AOR)", domain_name),
    "data_dir": Option("./convergence-data", "where the default SQLite database (convergence.db) goes"),
    "database": Option("", "SQLAlchemy URL; empty means SQLite at <data_dir>/convergence.db"),
    "disabled_plugins": Option([], "entry-point names of plugins not to load"),
    "plugin_errors": Option("fail", 'a plugin that fails to load: "fail" stops start-up, "skip" logs and '
                            "goes on without it", one_of("fail", "skip")),
    "max_offline_messages": Option(1000, "messages kept per account while it is offline (XEP-0160)",
                                   positive_int),
    "log_level": Option("info", "logging level", one_of("debug", "info", "warning", "error")),
    "stats_interval": Option(60.0, "seconds between the info lines counting the messages routed "
                             "(none when nothing was routed); 0 turns them off", non_negative_number),
    "workers": Option(1, 'worker processes sharing the listeners, under a supervisor ("auto": one per '
                     "CPU core); more than 1 makes each a cluster member and needs PostgreSQL and Redis "
                     "(docs/cluster.md)", worker_count),
}, "the core")


@dataclass
class Config:
    """Validated settings: ``config["server"]["domain"]``; ``path`` is the file, or None for defaults."""

    path: Path | None
    raw: dict = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    sections: dict[str, Section] = field(default_factory=dict)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    def _where(self) -> str:
        return str(self.path) if self.path else "configuration"

    def error(self, text: str) -> ConfigError:
        """A ConfigError prefixed with the file's name."""
        return ConfigError(f"{self._where()}: {text}")

    def add_section(self, section: Section) -> None:
        """Validate the file's table for ``section`` and fill in defaults."""
        table = self.raw.get(section.name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{self._where()}: [{section.name}] must be a table")
        for key in table:
            if key not in section.options:
                known = ", ".join(sorted(section.options)) or "none"
                raise ConfigError(f"{self._where()}: [{section.name}] {key}: unknown key (known keys: {known})")
        values = {}
        for key, option in section.options.items():
            if key in table:
                try:
                    values[key] = option.convert(table[key])
                except ValueError as exc:
                    raise ConfigError(f"{self._where()}: [{section.name}] {key}: {exc}, "
                                      f"got {table[key]!r}") from None
            else:
                values[key] = option.convert(option.default)
        self.sections[section.name] = section
        self.values[section.name] = values

    def check_unknown_sections(self, ignored: set[str]) -> None:
        """Every table in the file must belong to the core or a plugin (loaded or disabled)."""
        for name in self.raw:
            if name not in self.sections and name not in ignored:
                known = ", ".join(sorted(self.sections))
                raise ConfigError(f"{self._where()}: [{name}]: unknown section (known sections: {known})")

    @property
    def data_dir(self) -> Path:
        return Path(self.values["server"]["data_dir"])

    @property
    def database_url(self) -> str:
        return self.values["server"]["database"] or f"sqlite:///{self.data_dir / 'convergence.db'}"


def load(path: str | Path | None, overrides: dict | None = None) -> Config:
    """Read ``path`` (or nothing: built-in defaults) and validate the ``[server]`` table.

    ``overrides`` (a TOML-shaped dict) is merged over the file; tests and ``--demo`` use it.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for name, table in (overrides or {}).items():
        raw[name] = {**raw.get(name, {}), **table}
    config = Config(path, raw)
    config.add_section(SERVER)
    return config
