"""The SIP protocol cores are sans-IO (h11's rule; docs/sip.md "Code"): message.py (parser),
transaction.py (RFC 3261 §17 state tables) and digest.py (RFC 3261 §22, RFC 8760) import only
standard modules that touch no socket, thread, event loop or clock, and of this package only each
other. The transport (transport.py) is the only place for those."""
import ast
from pathlib import Path

import pytest

from convergence.plugins.sip import digest, message, transaction

SANS_IO = {"message": message, "transaction": transaction, "digest": digest}
#: Standard modules the cores may use (``os`` for ``os.urandom`` in digest nonces).
ALLOWED = {"__future__", "base64", "contextlib", "dataclasses", "functools", "hashlib", "hmac",
           "itertools", "os", "re", "struct", "types", "typing"}


def imports(module) -> tuple[set[str], set[str]]:
    """(absolute top-level modules, sibling modules of relative imports) ``module`` imports."""
    absolute, relative = set(), set()
    for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
        if isinstance(node, ast.Import):
            absolute |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            relative |= ({node.module.split(".")[0]} if node.module
                         else {alias.name for alias in node.names})
        elif isinstance(node, ast.ImportFrom):
            absolute.add(node.module.split(".")[0])
    return absolute, relative


@pytest.mark.parametrize("name", sorted(SANS_IO))
def test_protocol_core_does_no_io(name):
    absolute, relative = imports(SANS_IO[name])
    assert absolute <= ALLOWED, f"{name}.py imports {sorted(absolute - ALLOWED)}"
    assert relative <= set(SANS_IO), f"{name}.py imports .{sorted(relative - set(SANS_IO))}"
