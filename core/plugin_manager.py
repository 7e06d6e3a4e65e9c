"""The plugin manager: entry points of group ``convergence.plugins``, builtins, validation, tracing.

Every plugin, bundled or third-party, is an entry point ``name = module`` in that group. Names in
``[server] disabled_plugins`` are blocked. A plugin that fails to import or implements an unknown
hook stops start-up with a :class:`PluginError` naming it and its distribution — or, with
``[server] plugin_errors = "skip"``, is left out with a logged error. A plugin that needs another
says so with :meth:`PluginManager.require` instead of importing it.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import sys

import pluggy

from . import hookspecs

GROUP = "convergence.plugins"
log = logging.getLogger(__name__)

#: Modules of the core that are plugins too (registered first, never disabled).
BUILTINS = ("convergence.router",)


class PluginError(Exception):
    """A plugin could not be loaded; the message names it and its distribution."""


def available() -> dict[str, importlib.metadata.EntryPoint]:
    """Every entry point of the group, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus where each plugin came from."""

    def __init__(self):
        super().__init__("convergence")
        self.add_hookspecs(hookspecs)
        self.distributions: dict[str, str] = {}  # plugin name -> "dist version"
        self.skipped: set[str] = set()  # plugins left out by plugin_errors = "skip"
        self._answers: dict = {}  # see ``answer``; emptied when a plugin comes or goes
        for module in BUILTINS:
            self.register(importlib.import_module(module), name=module.rsplit(".", 1)[1])
            self.distributions[module.rsplit(".", 1)[1]] = "convergence (core)"
        if os.environ.get("CONVERGENCE_TRACE_PLUGINS") == "1":
            self.trace.root.setwriter(lambda text: sys.stderr.write(text))
            self.enable_tracing()

    def register(self, plugin, name=None):
        self._answers.clear()
        return super().register(plugin, name)

    def unregister(self, plugin=None, name=None):
        self._answers.clear()
        return super().unregister(plugin, name)

    def answer(self, key, compute):
        """``compute()``, kept until a plugin is registered or unregistered: for hook answers that
        depend only on which plugins there are and their settings (``share_roster``,
        ``service_users``), asked on hot paths such as every presence broadcast."""
        try:
            return self._answers[key]
        except KeyError:
            value = self._answers[key] = compute()
            return value

    def direct(self, name: str, arguments: tuple[str, ...]) -> list:
        """The implementations of hook ``name`` as (function, positions of the arguments it takes
        among ``arguments``), in pluggy's call order, for a hot path to call itself: a pluggy
        dispatch costs ~2.5 µs, calling the functions ~0.3 µs. Kept like :meth:`answer`. When an
        implementation is a wrapper (only pluggy runs those), one entry that calls the hook."""
        def compute():
            caller = getattr(self.hook, name)
            impls = caller.get_hookimpls()
            if any(impl.hookwrapper or impl.wrapper for impl in impls):
                return [(lambda *given: caller(**dict(zip(arguments, given))), tuple(range(len(arguments))))]
            return [(impl.function, tuple(arguments.index(a) for a in impl.argnames))
                    for impl in reversed(impls)]
        return self.answer(("direct", name), compute)

    def load_entry_points(self, disabled=(), errors: str = "fail") -> None:
        """Load every entry point not in ``disabled`` (``errors``: "fail" or "skip")."""
        for name, ep in sorted(available().items()):
            if name in disabled:
                self.set_blocked(name)
                continue
            if self.has_plugin(name):
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
            try:
                self._load_one(name, ep)
            except Exception as exc:  # noqa: BLE001 - any plugin failure is reported the same way
                message = f"plugin {name!r} from {dist}: {exc}"
                if errors == "fail":
                    raise PluginError(message) from exc
                log.error("skipped %s", message)
                self.skipped.add(name)
                continue
            self.distributions[name] = dist

    def register_plugin(self, plugin, name: str, distribution: str = "registered in code") -> None:
        """Register a module or object as a plugin and validate its hooks at once."""
        self._load_one(name, plugin)
        self.distributions[name] = distribution

    def require(self, core, plugin: str, needed: str, because: str) -> None:
        """Stop start-up unless plugin ``needed`` is loaded: ``plugin`` calls this from its
        ``on_startup`` when its settings (``because``, e.g. "[callback] url is set") need the other
        plugin, and then reaches it through hooks or ``get_plugin("<needed>:server")``. Raises the
        ConfigError that ``serve`` reports in one line with exit status 2."""
        if not self.has_plugin(needed):
            state = "disabled in [server] disabled_plugins" if self.is_blocked(needed) else "not loaded"
            raise core.config.error(f"{because}, but plugin {plugin!r} needs plugin {needed!r}, "
                                    f"which is {state}")

    def _load_one(self, name, source) -> None:
        plugin = source.load() if isinstance(source, importlib.metadata.EntryPoint) else source
        self.register(plugin, name=name)
        try:
            self._check(plugin)
        except Exception:
            self.unregister(plugin)
            raise

    def _check(self, plugin) -> None:
        """``check_pending`` for one plugin: every hookimpl must name a hookspec."""
        for caller in self.get_hookcallers(plugin) or ():
            if not caller.has_spec():
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin and not impl.optionalhook:
                        raise pluggy.PluginValidationError(
                            plugin, f"unknown hook {caller.name!r} (misspelled?)")

    def describe(self) -> list[tuple[str, str, list[str]]]:
        """(name, distribution, hooks it implements) for every loaded plugin, by name."""
        rows = []
        for name, plugin in self.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(c.name for c in self.get_hookcallers(plugin) or ())
            rows.append((name, self.distributions.get(name, "?"), hooks))
        return sorted(rows)
