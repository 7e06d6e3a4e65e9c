"""Architecture checks (issue 12; docs/architecture.md says why each arrow or kind of state is banned).

Read from the source with ``ast`` (nothing is imported), over ``core/`` (``convergence``) and
``plugins/`` (``convergence.plugins``):

- **module state**: no module-level mutable state. Per-server state hangs off the plugin's per-core
  object (docs/architecture.md, "Where state lives"): no registry dict/set/list/WeakKeyDictionary at
  module level, no ``global``, no rebinding of another module's globals (``transaction.T1 = ...``),
  and constant tables are immutable (tuple, frozenset, ``types.MappingProxyType``), so that they
  cannot turn into state unnoticed;
- **import graph**: no cycles; no plugin imports another plugin; the core imports no plugin and does
  not name one;
- **sans-IO**: the protocol cores import no gevent, socket, ssl, select, selectors or asyncio;
- **test layout**: every test folder is a package, so two test files may share a basename.

Each check is a function of a source root; the ``test_check_*`` tests at the end run it on a tiny
synthetic tree to show that it finds what it should and accepts what it should.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (("core", "convergence"), ("plugins", "convergence.plugins"))
PLUGIN_PREFIX = "convergence.plugins."

#: RFC 3261 / RFC 6120-6121 protocol cores: parsers and state machines that must stay sans-IO.
PROTOCOL_CORES = ("convergence.plugins.sip.message", "convergence.plugins.sip.transaction",
                  "convergence.plugins.sip.digest", "convergence.plugins.xmpp.stream",
                  "convergence.plugins.xmpp.sasl", "convergence.plugins.xmpp.subscriptions",
                  "convergence.plugins.xmpp.c2s", "convergence.plugins.xmpp.component")
IO_MODULES = frozenset({"gevent", "socket", "ssl", "select", "selectors", "asyncio"})

#: Module-level values built by a call the scan cannot judge, checked by hand to be immutable (or
#: free of per-server state). Each entry says why; anything else built by an unknown call fails.
ALLOWED = {
    # pluggy markers: they hold the project name only.
    "convergence.hookspecs:hookspec": "pluggy.HookspecMarker",
    "convergence.hookspecs:hookimpl": "pluggy.HookimplMarker",
    # A frozen dataclass instance (Presence is @dataclass(frozen=True)).
    "convergence.presence:UNAVAILABLE": "frozen Presence",
    # The [server] section's schema: Option/Section are read, never changed after import.
    "convergence.config:SERVER": "config schema",
    # cryptography's ObjectIdentifier is immutable.
    "convergence.certificates:XMPP_ADDR": "x509 OID",
    # SQLAlchemy statements and tables: immutable, generative constructs (each .where() copies).
    "convergence.store.accounts:_CREDENTIALS": "SQL statement",
    "convergence.plugins.sip.bindings:_UPDATE": "SQL statement",
    "convergence.store.offline:_PENDING": "SQL statement",
    "convergence.store.roster:_OWNER": "SQL statement",
    "convergence.store.roster:_ITEMS": "SQL statement",
    "convergence.store.roster:_REQUESTS": "SQL statement",
    "convergence.store.roster:_WATCHERS": "SQL statement",
    "convergence.store.roster:_SHOWN_TO": "SQL statement",
    "convergence.plugins.http.tokens:_OWNER": "SQL statement",
    "convergence.plugins.xmpp.archive_store:_ANY_PREFS": "SQL statement",
    # Flask blueprints: a recipe of routes filled once at import and applied to each core's own
    # Flask app (one blueprint may be registered on several apps); it holds no per-server data.
    "convergence.plugins.http.api:blueprint": "Flask blueprint",
    "convergence.plugins.http.expose:blueprint": "Flask blueprint",
    "convergence.plugins.http.uploads:blueprint": "Flask blueprint",
    # An OpenerDirector whose handlers keep nothing between requests (no cookie jar, no auth cache).
    "convergence.plugins.callback.forwarder:OPENER": "urllib opener",
    # Expat handlers: functions that raise, closures over a constant string.
    "convergence.plugins.xmpp.stream:_REFUSE_DTD": "function",
    "convergence.plugins.xmpp.stream:_REFUSE_COMMENT": "function",
    "convergence.plugins.xmpp.stream:_REFUSE_PI": "function",
    # Message ids: one process-wide counter behind a random per-process prefix (renewed in a forked
    # child). Sharing it between the cores of a process is what keeps ids unique in the process;
    # it holds no server's state.
    "convergence.message:_IDS": "id source",
}
#: Core modules that may say a plugin's name, and why (it means something else there).
CORE_MAY_SAY = {
    "convergence.addresses": "'sip'/'sips' are URI schemes (RFC 3261 §19.1) an address may be written in",
}

# ---- reading the package --------------------------------------------------------------------------


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``core/`` and ``plugins/`` under ``root``."""
    found = {}
    for folder, package in PACKAGES:
        for path in sorted((root / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(root / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def is_type_checking(node: ast.If) -> bool:
    return dotted(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def runtime_imports(tree: ast.Module):
    """Import statements that run: at module level, in functions and classes, but not under
    ``if TYPE_CHECKING:`` (those are for the type checker only)."""
    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                yield from (n for stmt in child.orelse for n in visit_one(stmt))
                continue
            yield from visit_one(child)

    def visit_one(node):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from visit(node)

    yield from visit(tree)


def imported(name: str, path: Path, node: ast.Import | ast.ImportFrom,
             known: set[str]) -> dict[str, str | tuple[str, str]]:
    """What ``node`` (in module ``name``) binds: local name -> a module, or (module, attribute).
    ``from x import y`` binds the submodule ``x.y`` when there is one, else ``(x, "y")``;
    ``import a.b`` binds ``a`` (``import a.b as c`` binds ``c`` to ``a.b``)."""
    if isinstance(node, ast.Import):
        return {(a.asname or a.name.split(".")[0]): (a.name if a.asname else a.name.split(".")[0])
                for a in node.names}
    base = node.module or ""
    if node.level:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
        base = ".".join(up + ([base] if base else []))
    return {(a.asname or a.name): (f"{base}.{a.name}" if f"{base}.{a.name}" in known else (base, a.name))
            for a in node.names}


def import_targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The modules ``node`` imports (``import a.b.c`` -> ``a.b.c``; parent packages not counted)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    return {b if isinstance(b, str) else b[0] for b in imported(name, path, node, known).values()}


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """Module -> {imported package module: line of the first import}, runtime imports only."""
    mods = modules(root)
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        edges = {}
        for node in runtime_imports(parse(path)):
            for target in import_targets(name, path, node, known):
                if target in known and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def plugin_of(module: str) -> str | None:
    return module.split(".")[2] if module.startswith(PLUGIN_PREFIX) else None  # convergence.plugins.X…


# ---- check: import graph ---------------------------------------------------------------------------


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(components)


def cycle_path(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    """One concrete cycle through the component, as ``a:line -> b:line -> a`` for the message."""
    members, start = set(component), component[0]
    paths, queue = {start: [start]}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                hops = paths[v] + [start]
                return " -> ".join(f"{a}:{graph[a][b]}" for a, b in zip(hops, hops[1:])) + f" -> {start}"
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return " <-> ".join(component)


def cross_plugin_imports(graph) -> list[str]:
    return [f"{a}:{line} imports {b}" for a, edges in sorted(graph.items()) for b, line in sorted(edges.items())
            if plugin_of(a) and plugin_of(b) and plugin_of(a) != plugin_of(b)]


def core_plugin_imports(graph) -> list[str]:
    return [f"{a}:{line} imports {b}" for a, edges in sorted(graph.items()) for b, line in sorted(edges.items())
            if not plugin_of(a) and plugin_of(b) and a != "convergence.testing"]


def plugin_names(root: Path = ROOT) -> set[str]:
    return {path.parent.name for path in (root / "plugins").glob("*/__init__.py")}


def docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def core_naming_plugins(root: Path = ROOT) -> list[str]:
    """String literals in the core (not docstrings, not the ``convergence.testing`` kit, which
    starts real servers) that name a plugin or its settings section: ``config["xmpp"]``, a
    hard-coded ``("echo", "http")``, ``"[http] callback_url"``."""
    names = plugin_names(root)
    pattern = re.compile(r"\[(%s)\]" % "|".join(map(re.escape, sorted(names))))
    found = []
    for module, path in modules(root).items():
        if plugin_of(module) or module in ("convergence.testing", "convergence.plugins", *CORE_MAY_SAY):
            continue
        tree = parse(path)
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                    and (node.value in names or pattern.search(node.value))):
                found.append(f"{module}:{node.lineno} {node.value!r}")
    return found


# ---- check: module-level state ----------------------------------------------------------------------

CONSTANT_NAME = re.compile(r"_*[A-Z][A-Z0-9_]*")
#: Calls that build immutable values (matched on the dotted name as written).
IMMUTABLE_CALLS = frozenset({
    "frozenset", "tuple", "str", "bytes", "int", "float", "bool", "complex", "range", "object",
    "re.compile", "struct.Struct", "types.MappingProxyType", "MappingProxyType", "logging.getLogger",
    "typing.NewType", "NewType", "typing.TypeVar", "TypeVar", "collections.namedtuple", "namedtuple",
    "enum.Enum", "os.getenv",
})
#: Methods of str/bytes constants (``"".join(...)``, ``os.urandom(8).hex()``).
STR_METHODS = frozenset({"join", "hex", "encode", "decode", "format", "lower", "upper", "strip", "replace"})
#: Calls that build mutable containers (a constant table when given contents), matched on the last name.
CONTAINER_CALLS = frozenset({"dict", "list", "set", "bytearray", "OrderedDict", "deque", "array"})
#: Calls that build state whatever their arguments, matched on the last name.
STATE_CALLS = frozenset({
    "defaultdict", "Counter", "ChainMap", "WeakKeyDictionary", "WeakValueDictionary", "WeakSet",
    "count", "Queue", "SimpleQueue", "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "local",
})
MUTATORS = frozenset({
    "append", "extend", "insert", "add", "update", "setdefault", "pop", "popitem", "clear", "remove",
    "discard", "__setitem__", "__delitem__", "appendleft", "extendleft", "sort", "reverse",
    "difference_update", "intersection_update", "symmetric_difference_update",
})
CONTAINERS = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)


@dataclass(frozen=True)
class Finding:
    module: str
    line: int
    name: str
    why: str

    def __str__(self):
        return f"{self.module}:{self.line} {self.name}: {self.why}"


IMMUTABLE_RETURNS = re.compile(r"(str|bytes|int|float|bool|tuple|frozenset)(\[.*\])?")


class Module:
    """One module as the state scan sees it: its tree, what its imports bind, and the return
    annotations of its functions (a constant made by ``tag(...) -> str`` is a str)."""

    def __init__(self, name: str, path: Path, known: set[str]):
        self.name, self.tree = name, parse(path)
        self.bound = {}
        for node in runtime_imports(self.tree):
            self.bound |= imported(name, path, node, known)
        self.returns = {node.name: ast.unparse(node.returns) for node in self.tree.body
                        if isinstance(node, ast.FunctionDef) and node.returns is not None}

    def owner(self, expr: ast.AST, known: set[str]) -> tuple[str, str] | None:
        """(module, global) that ``NAME`` or ``module.NAME`` names, if any."""
        if isinstance(expr, ast.Name):
            target = self.bound.get(expr.id)
            return target if isinstance(target, tuple) else (self.name, expr.id) if target is None else None
        if isinstance(expr, ast.Attribute):
            module = self.bound.get(expr.value.id) if isinstance(expr.value, ast.Name) else dotted(expr.value)
            if isinstance(module, str) and module in known:
                return (module, expr.attr)
        return None


def judge(value: ast.AST, returns=lambda call: None) -> str:
    """'immutable', 'container' (a literal or comprehension), 'state' (a mutable factory call) or
    'unknown' (a call the scan cannot judge). ``returns(call)`` is the called function's return
    annotation when it is one of the package's."""
    def again(v):
        return judge(v, returns)
    if isinstance(value, (ast.Constant, ast.JoinedStr, ast.Name, ast.Attribute, ast.Subscript,
                          ast.Lambda, ast.Compare, ast.GeneratorExp)):
        return "immutable"  # a Name or Attribute is judged where it is defined
    if isinstance(value, CONTAINERS):
        return "container"
    if isinstance(value, ast.Tuple):
        return worst(map(again, value.elts))
    if isinstance(value, ast.BinOp):
        return worst(map(again, (value.left, value.right)))
    if isinstance(value, ast.UnaryOp):
        return again(value.operand)
    if isinstance(value, ast.BoolOp):
        return worst(map(again, value.values))
    if isinstance(value, ast.IfExp):
        return worst(map(again, (value.body, value.orelse)))
    if isinstance(value, ast.Call):
        name = dotted(value.func) or ""
        if name in IMMUTABLE_CALLS or IMMUTABLE_RETURNS.fullmatch(returns(value) or ""):
            return "immutable"
        if name.rpartition(".")[2] in STATE_CALLS:
            return "state"
        if name.rpartition(".")[2] in CONTAINER_CALLS:
            return "container"
        if isinstance(value.func, ast.Attribute) and value.func.attr in STR_METHODS:
            return "immutable"
    return "unknown"


def worst(verdicts) -> str:
    order = ("immutable", "unknown", "container", "state")
    return max(verdicts, key=order.index, default="immutable")


def module_level(body):
    """Statements that run at import (descending into if/try/with/for, not into defs or classes)."""
    for node in body:
        yield node
        if isinstance(node, ast.If) and is_type_checking(node):
            continue
        if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody"):
                yield from module_level(getattr(node, field, ()))
            for handler in getattr(node, "handlers", ()):
                yield from module_level(handler.body)


def bindings(node) -> list[tuple[str, ast.AST]]:
    """(name, value) pairs an assignment binds (tuple targets matched element by element)."""
    if isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
        return [(node.target.id, node.value)]
    if not isinstance(node, ast.Assign):
        return []
    pairs = []
    for target in node.targets:
        if isinstance(target, ast.Name):
            pairs.append((target.id, node.value))
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = node.value.elts if isinstance(node.value, (ast.Tuple, ast.List)) else None
            for i, element in enumerate(target.elts):
                if not isinstance(element, ast.Name):
                    continue
                if values is not None and len(values) == len(target.elts):
                    pairs.append((element.id, values[i]))
                elif isinstance(node.value, (ast.GeneratorExp, ast.ListComp)):
                    pairs.append((element.id, node.value.elt))
                else:
                    pairs.append((element.id, node.value))
    return pairs


def base_of(node: ast.AST) -> ast.AST:
    """What a subscript/attribute/method-call chain starts from: ``X`` in ``X[a].get(b)[c]``, and
    ``mod.X`` in ``mod.X[a]`` (an attribute of a plain name is kept whole)."""
    while True:
        if isinstance(node, ast.Attribute) and not isinstance(node.value, ast.Name):
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return node


def mutations(mods: dict[str, Module], known: set[str]) -> dict[tuple[str, str], tuple[str, int]]:
    """(module, global name) -> (module, line) of one place that changes it in place: item
    assignment or deletion, augmented assignment, a mutating method (``append``, ``update``, …),
    whether it is reached as ``NAME``, ``module.NAME`` or a name imported from its module. A local
    variable with the name of a global counts too: the scan does not track scopes."""
    found = {}
    for name, module in mods.items():
        def note(expr, line):
            hit = module.owner(base_of(expr), known)
            if hit:
                found.setdefault(hit, (name, line))

        for node in ast.walk(module.tree):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Subscript):
                        note(target.value, node.lineno)
                    elif isinstance(target, ast.Name) and isinstance(node, ast.AugAssign):
                        note(target, node.lineno)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
                note(node.func.value, node.lineno)
    return found


def module_state(root: Path = ROOT, allowed: dict | None = None) -> list[Finding]:
    """Every piece of module-level mutable state in the package (see the module docstring)."""
    allowed = ALLOWED if allowed is None else allowed
    known = set(modules(root))
    mods = {name: Module(name, path, known) for name, path in modules(root).items()}
    changed = mutations(mods, known)
    found = []
    for name, module in mods.items():
        def returns(call):
            callee = call.func.id if isinstance(call.func, ast.Name) else None
            target = module.bound.get(callee) if callee else None
            if isinstance(target, tuple) and target[0] in mods:
                return mods[target[0]].returns.get(target[1])
            return module.returns.get(callee) if callee and target is None else None

        for node in ast.walk(module.tree):
            if isinstance(node, ast.Global):
                found.append(Finding(name, node.lineno, ", ".join(node.names), "`global` statement"))
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                for target in targets:
                    for element in (target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]):
                        if (isinstance(element, ast.Attribute) and isinstance(element.value, ast.Name)
                                and isinstance(module.bound.get(element.value.id), str)):
                            found.append(Finding(name, node.lineno, dotted(element), "rebinds another "
                                                 "module's global (make it a constructor parameter)"))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                    if judge(default) in ("container", "state"):
                        found.append(Finding(name, default.lineno, f"{getattr(node, 'name', 'lambda')}()",
                                             "mutable default argument: one object shared by every call"))
        for node in module_level(module.tree.body):
            for var, value in bindings(node):
                verdict = judge(value, returns)
                if var == "__all__" or verdict == "immutable" or f"{name}:{var}" in allowed:
                    continue  # __all__: module metadata for the import system, not state
                mutated = changed.get((name, var))
                empty = (not (getattr(value, "keys", None) or getattr(value, "elts", None)
                              or getattr(value, "args", None))
                         and isinstance(value, (ast.Dict, ast.List, ast.Set, ast.Call)))
                if verdict == "unknown":
                    why = ("built by a call the scan cannot judge: if it is immutable, add it to "
                           "ALLOWED in tests/test_architecture.py with the reason")
                elif mutated:
                    why = (f"changed in place at {mutated[0]}:{mutated[1]} "
                           "(per-server state goes on the per-core object)")
                elif verdict == "state" or empty or not CONSTANT_NAME.fullmatch(var):
                    why = "mutable registry or state at import (per-server state goes on the per-core object)"
                else:
                    why = ("mutable constant: make it a tuple, frozenset or types.MappingProxyType "
                           "so that it cannot become state")
                found.append(Finding(name, node.lineno, var, why))
        for cls in module.tree.body:
            if isinstance(cls, ast.ClassDef):
                for node in cls.body:
                    for var, value in bindings(node):
                        if judge(value) in ("container", "state") and var != "__slots__":
                            found.append(Finding(name, node.lineno, f"{cls.name}.{var}",
                                                 "mutable class attribute: shared by every instance and core"))
    return found


def stale_allowances(root: Path = ROOT, allowed: dict | None = None) -> list[str]:
    """ALLOWED entries that no longer name a module-level value the scan would report."""
    allowed = ALLOWED if allowed is None else allowed
    judged = {f"{f.module}:{f.name}" for f in module_state(root, allowed={})}
    return sorted(set(allowed) - judged)


MUTABLE_CONSTANT = "mutable constant"


def registries(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if not f.why.startswith(MUTABLE_CONSTANT)]


def mutable_constants(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.why.startswith(MUTABLE_CONSTANT)]


# ---- check: sans-IO ------------------------------------------------------------------------------------


def io_imports(root: Path = ROOT, cores=PROTOCOL_CORES) -> list[str]:
    """Imports of I/O modules in the protocol cores (anywhere in the file, even in a function)."""
    mods = modules(root)
    found = []
    for module in cores:
        tree = parse(mods[module])
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{module}:{node.lineno} imports {n}" for n in names
                      if n and n.split(".")[0] in IO_MODULES]
    return found


# ---- the checks on the project ----------------------------------------------------------------------------


def listing(items) -> str:
    return "\n".join(map(str, items))


@pytest.fixture(scope="module")
def state():
    return module_state()


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_no_module_level_registries_globals_or_rebinding(state):
    """Issue 12 §1-2: per-server state (the SIP `_running` dict, SERVICES, STREAMS, FORWARDERS,
    `_MEMORY`, the HANDLERS filled at import, T1/T2/T4 rebound by sip/__init__) lives on each
    core's plugin object instead, so two cores in one process never share it."""
    found = registries(state)
    assert not found, "module-level state in core/ or plugins/:\n" + listing(found)


def test_module_level_constant_tables_are_immutable(state):
    found = mutable_constants(state)
    assert not found, "mutable module-level constants:\n" + listing(found)


def test_allow_list_is_current():
    stale = stale_allowances()
    assert not stale, f"ALLOWED entries naming nothing the scan cannot judge (remove them): {stale}"


def test_no_import_cycles(graph):
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + listing(cycle_path(graph, c) for c in cycles)


def test_no_plugin_imports_another_plugin(graph):
    """A plugin that needs another declares it and talks to it through hooks or
    ``core.pm.get_plugin``; it does not import its modules."""
    found = cross_plugin_imports(graph)
    assert not found, listing(found)


def test_core_knows_no_plugin(graph):
    found = core_plugin_imports(graph) + core_naming_plugins()
    assert not found, "the core imports or names plugins:\n" + listing(found)


def test_protocol_cores_are_sans_io():
    """The protocol cores are fed bytes and return events and bytes; the transports do the I/O."""
    found = io_imports()
    assert not found, listing(found)


def test_every_test_folder_is_a_package():
    """pytest names a test module in a plain folder by its basename, so two plain folders with a
    ``test_presence.py`` each fail with "import file mismatch"; in packages they are
    ``tests.core.test_presence`` and ``tests.xmpp.test_presence``. tests/http is the one plain
    folder left: as a package next to pytest's ``pythonpath = tests`` it would shadow the stdlib
    ``http``; being the only one, it cannot clash."""
    tests = ROOT / "tests"
    plain = sorted(str(folder.relative_to(ROOT)) for folder in [tests, *tests.rglob("*")]
                   if folder.is_dir() and any(folder.glob("*.py")) and not (folder / "__init__.py").exists()
                   and "plugin_package" not in folder.parts and folder != tests / "http")
    assert not plain, f"test folders without __init__.py: {plain}"


# ---- the checks on synthetic trees ------------------------------------------------------------------------


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in ("core", "plugins"):
        (root / folder).mkdir(exist_ok=True)
        (root / folder / "__init__.py").touch()
    return root


def test_check_module_state_finds_registries_and_accepts_constants(tmp_path):
    root = tree(tmp_path, {
        "core/good.py": (
            "import logging, re, types\n"
            "from typing import Callable\n"
            "from .helpers import tag\n"
            "__all__ = ['A']\n"
            "log = logging.getLogger(__name__)\n"
            "A, B = 1, 'b'\n"
            "NAMES = ('x', 'y') + ('z',)\n"
            "KINDS = frozenset({'a'})\n"
            "WORD = re.compile(r'\\w+')\n"
            "TABLE = types.MappingProxyType({'a': 1})\n"
            "PREFIX = 'x'.join(NAMES)\n"
            "BIND = tag('bind')\n"
            "Handler = Callable[[int], None]\n"
            "SCHEMA = Schema('x')\n"
            "class Thing:\n"
            "    __slots__ = ['a']\n"
            "    LIMIT = 3\n"
            "def f(table=()):\n"
            "    local = {}\n"
            "    local['a'] = 1\n"),
        "core/helpers.py": "def tag(name) -> str:\n    return name\n",
        "core/bad.py": (
            "import weakref, itertools\n"
            "from . import good\n"
            "_running = {}\n"
            "HANDLERS = {}\n"
            "SERVICES = weakref.WeakKeyDictionary()\n"
            "COUNTER = itertools.count()\n"
            "TABLE = {'a': 1}\n"
            "LIST = ['a']\n"
            "FILLED = {'a': [1]}\n"
            "def register(key, seen={}):\n"
            "    FILLED[key].append(1)\n"
            "def start(t1):\n"
            "    global T1\n"
            "    good.A, good.B = t1, 2\n"
            "class Registry:\n"
            "    known = {}\n"),
        "plugins/p/__init__.py": "from convergence.bad import LIST\nLIST.append(2)\n",
    })
    found = module_state(root, allowed={"convergence.good:SCHEMA": "test"})
    assert {f.name for f in registries(found)} == {
        "_running", "HANDLERS", "SERVICES", "COUNTER", "FILLED", "LIST", "register()", "T1", "good.A",
        "good.B", "Registry.known"}, listing(found)
    assert [f.name for f in mutable_constants(found)] == ["TABLE"], listing(found)
    assert {f.why.split(" (")[0] for f in found if f.name in ("LIST", "FILLED")} == {
        "changed in place at convergence.plugins.p:2", "changed in place at convergence.bad:11"}
    assert [f.name for f in module_state(root, allowed={}) if "cannot judge" in f.why] == ["SCHEMA"]
    assert stale_allowances(root, {"convergence.good:SCHEMA": "", "convergence.good:A": ""}) == [
        "convergence.good:A"]


def test_check_import_graph(tmp_path):
    root = tree(tmp_path, {
        "core/a.py": "from .b import thing\n",
        "core/b.py": "def f():\n    from . import a\n",  # function-level imports count
        "core/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import D\n",
        "core/d.py": "from . import c\n",  # c -> d only for the type checker: no cycle
        "core/store/__init__.py": "from .. import a\n",
        "plugins/xmpp/__init__.py": "from ..sip import message\nfrom . import stream\n",
        "plugins/xmpp/stream.py": "from ... import a\n",
        "plugins/sip/__init__.py": "from .message import parse\n",
        "plugins/sip/message.py": "import convergence.plugins.xmpp.stream\nfrom convergence.plugins import xmpp\n",
    })
    graph = import_graph(root)
    assert graph["convergence.store"] == {"convergence.a": 1}
    assert graph["convergence.plugins.xmpp.stream"] == {"convergence.a": 1}
    assert graph["convergence.c"] == {}
    assert import_cycles(graph) == [["convergence.a", "convergence.b"],
                                    ["convergence.plugins.sip.message", "convergence.plugins.xmpp"]]
    assert cycle_path(graph, ["convergence.a", "convergence.b"]) == \
        "convergence.a:1 -> convergence.b:2 -> convergence.a"
    assert cross_plugin_imports(graph) == [
        "convergence.plugins.sip.message:2 imports convergence.plugins.xmpp",
        "convergence.plugins.sip.message:1 imports convergence.plugins.xmpp.stream",
        "convergence.plugins.xmpp:1 imports convergence.plugins.sip.message"]
    core = tree(tmp_path / "core_side", {
        "core/a.py": "from .plugins.sip import message\n",
        "core/names.py": "'''Says \"sip\" in its docstring only.'''\nSECTION = 'xmpp'\nX = '[sip] t1'\n",
        "plugins/sip/__init__.py": "", "plugins/sip/message.py": ""})
    assert core_plugin_imports(import_graph(core)) == ["convergence.a:1 imports convergence.plugins.sip.message"]
    assert core_naming_plugins(core) == ["convergence.names:3 '[sip] t1'"]  # no plugin xmpp there


def test_check_sans_io(tmp_path):
    root = tree(tmp_path, {
        "plugins/sip/message.py": "import json\nfrom ..sip import digest\n",
        "plugins/sip/digest.py": "from ssl import SSLError\ndef f():\n    import gevent.socket\n",
    })
    cores = ("convergence.plugins.sip.message", "convergence.plugins.sip.digest")
    assert sorted(io_imports(root, cores)) == ["convergence.plugins.sip.digest:1 imports ssl",
                                               "convergence.plugins.sip.digest:3 imports gevent.socket"]


@pytest.mark.parametrize("module", PROTOCOL_CORES)
def test_protocol_core_list_is_current(module):
    assert module in modules(), f"{module} moved: update PROTOCOL_CORES"
