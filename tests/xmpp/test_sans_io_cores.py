"""The XMPP protocol cores are sans-IO (docs/architecture.md): stream.py, sasl.py,
subscriptions.py, c2s.py and websocket.py import no gevent, socket, ssl or select — neither themselves nor
through the plugin modules they import (c2s.py's stanza handlers included)."""
import ast
from pathlib import Path

import pytest

from convergence.plugins import xmpp

PLUGIN = Path(xmpp.__file__).parent
PACKAGE = "convergence.plugins.xmpp"
IO = {"gevent", "socket", "ssl", "select", "selectors", "asyncio", "threading"}
CORES = ("stream", "sasl", "subscriptions", "c2s", "websocket")


def imports(module: str) -> tuple[set[str], set[str]]:
    """(top-level names of what ``module`` imports, sibling plugin modules it imports)."""
    tree = ast.parse((PLUGIN / f"{module}.py").read_text())
    names, siblings = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 or base.startswith(PACKAGE + "."):
                target = base.removeprefix(PACKAGE + ".")
                siblings |= {target} if target else {alias.name for alias in node.names}
            elif node.level == 0:
                names.add(base)
    return {name.split(".")[0] for name in names}, siblings


def closure(module: str) -> dict[str, set[str]]:
    """The I/O imports of ``module`` and of every plugin module it reaches, by module."""
    seen, todo, found = set(), [module], {}
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        names, siblings = imports(current)
        if names & IO:
            found[current] = names & IO
        todo += siblings
    return found


@pytest.mark.parametrize("module", CORES)
def test_protocol_core_does_no_io(module):
    assert closure(module) == {}


def test_the_check_sees_io_imports():
    """The scan finds the plugin's socket code, and finds it through a chain of imports."""
    assert closure("transport") == {"transport": {"gevent"}}
    assert "transport" in closure("server")
