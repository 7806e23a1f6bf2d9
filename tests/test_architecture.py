"""Fitness checks over the engine's source (include/skein), read with ``ast``: no module
is imported, so a check fails on what the code says, whatever importing it would do.

- sizes: no module over MAX_MODULE_LINES lines, no function or method over
  MAX_FUNCTION_LINES (``end_lineno - lineno + 1``);
- privacy: no ``from skein.x import _name`` and no ``module._name`` of another skein module;
- layers: a module imports only its own layer and those below it (LAYERS, MAY_IMPORT), and
  every module has a layer, so a new module must be placed;
- cycles: no two modules import each other, directly or around a loop, in the engine or in
  the Airflow plugin (an import inside a function counts: it is the same dependency, hidden).

Known violations are listed in ALLOWED, each by the key its check reports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

INCLUDE = Path(__file__).resolve().parents[1] / "include"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60

# Layers, lowest first. Top-level modules are placed by name; a package's modules by the
# package. Anything else is unplaced, which test_every_module_has_a_layer reports.
LAYERS = ("foundation", "rewrite", "simulation", "agents", "app")
FOUNDATION = {"skein",  # the package's __init__: its version
              "skein.errors", "skein.yamlspan", "skein.spec", "skein.store", "skein.warehouse",
              "skein.lineage", "skein.dbt", "skein.ownership", "skein.batches", "skein.rollout",
              "skein.apply", "skein.catalog", "skein.discovery", "skein.audit", "skein.approvals",
              "skein.faults", "skein.paths", "skein.controls", "skein.store_schema",
              "skein.spec_sql", "skein.sqlbudget", "skein.view_comments",
              "skein.statuses", "skein.spec_values", "skein.campaign_files",
              # dbt-core in its own environment (issue 19): sandbox, graph, schemas
              "skein.dbt_sandbox", "skein.dbt_child", "skein.dbt_packages", "skein.dbt_manifest",
              "skein.dbt_seeds", "skein.dbt_graph", "skein.dbt_schemas",
              "skein.dbt_build", "skein.dbt_build_child",
              # consumer Jinja and YAML as untrusted input (issue 18)
              "skein.dbt_yaml", "skein.dbt_render", "skein.jinja_process", "skein.jinja_sandbox",
              # Python consumers (issue 21): SQL strings, tables by name, columns
              "skein.python_strings", "skein.python_refs"}
PACKAGES = {"skein.rewrite": "rewrite", "skein.simulation": "simulation",
            "skein.agents": "agents", "skein.demo": "demo", "skein.pipeline": "app",
            "skein.views": "app"}  # the portal's read models
APP = {"skein.evidence", "skein.plan", "skein.rundir", "skein.cli", "skein.console",
       "skein.warm", "skein.cli_checks"}  # names the pipeline's modules to preload

MAY_IMPORT = {layer: set(LAYERS[:i + 1]) for i, layer in enumerate(LAYERS)}
MAY_IMPORT["demo"] = {"foundation", "demo"}  # the demo fleet stands on the foundation alone
MAY_IMPORT["app"].add("demo")  # the CLI builds the demo

# Known violations, each by the key its check reports (none left).
ALLOWED: set[tuple[str, ...]] = set()


@dataclass(frozen=True)
class Module:
    name: str  # skein.simulation.expectations; a package by its own name
    path: Path
    lines: int
    tree: ast.Module


def _modules() -> dict[str, Module]:
    out = {}
    for path in sorted((INCLUDE / "skein").rglob("*.py")):
        parts = path.relative_to(INCLUDE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        text = path.read_text(encoding="utf-8")
        out[name] = Module(name, path, len(text.splitlines()), ast.parse(text, str(path)))
    return out


MODULES = _modules()


def layer_of(name: str) -> str | None:
    if name in FOUNDATION:
        return "foundation"
    if name in APP:
        return "app"
    for package, layer in PACKAGES.items():
        if name == package or name.startswith(package + "."):
            return layer
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_of(dotted: str) -> str:
    """The longest prefix of ``dotted`` that is a skein module."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The module an ``from ... import`` reads from, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package = package[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _skein(dotted: str) -> bool:
    return dotted == "skein" or dotted.startswith("skein.")


def imports(module: Module) -> list[tuple[int, str, str | None]]:
    """``(line, module imported, name imported from it or None)`` of every skein import,
    including those inside functions and ``if TYPE_CHECKING:``."""
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, _module_of(a.name), None) for a in node.names if _skein(a.name)]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if not _skein(source):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((node.lineno, submodule, None) if submodule in MODULES
                             else (node.lineno, _module_of(source), alias.name))
    return found


def _module_names(module: Module) -> dict[str, str]:
    """Local name -> the skein module it is bound to by an import."""
    bound = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _skein(alias.name):
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound[alias.name.partition(".")[0]] = alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    bound[alias.asname or alias.name] = f"{source}.{alias.name}"
    return bound


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` of a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def _functions(tree: ast.AST, prefix: str):
    """``(qualified name, node)`` of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}.{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, name)
        else:
            yield from _functions(node, prefix)


def _report(found: dict[tuple, str], what: str) -> str:
    return f"{what}:\n" + "\n".join(f"  {found[key]}" for key in sorted(found))


def _new(found: dict[tuple, str]) -> dict[tuple, str]:
    return {key: text for key, text in found.items() if key not in ALLOWED}


def module_size_violations() -> dict[tuple, str]:
    return {("module-lines", m.name): f"{m.path.relative_to(INCLUDE)}: {m.lines} lines"
            for m in MODULES.values() if m.lines > MAX_MODULE_LINES}


def function_size_violations() -> dict[tuple, str]:
    found = {}
    for module in MODULES.values():
        for name, node in _functions(module.tree, module.name):
            size = node.end_lineno - node.lineno + 1
            if size > MAX_FUNCTION_LINES:
                found[("function-lines", name)] = \
                    f"{module.path.relative_to(INCLUDE)}:{node.lineno}: {name}: {size} lines"
    return found


def private_use_violations() -> dict[tuple, str]:
    found = {}
    for module in MODULES.values():
        where = module.path.relative_to(INCLUDE)
        for line, source, name in imports(module):
            if name is not None and _private(name) and source != module.name:
                found[("private", module.name, f"{source}.{name}")] = \
                    f"{where}:{line}: imports {name} from {source}"
        bound = _module_names(module)
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            dotted = _dotted(node.value)
            head, _, rest = (dotted or "").partition(".")
            target = ".".join(filter(None, [bound.get(head), rest])) if head in bound else None
            if target in MODULES and target != module.name:
                found[("private", module.name, f"{target}.{node.attr}")] = \
                    f"{where}:{node.lineno}: uses {target}.{node.attr}"
    return found


def layer_violations() -> dict[tuple, str]:
    found = {}
    for module in MODULES.values():
        layer = layer_of(module.name)
        for line, target, _ in imports(module):
            other = layer_of(target)
            if layer and other and other not in MAY_IMPORT[layer]:
                found[("layer", module.name, target)] = (
                    f"{module.path.relative_to(INCLUDE)}:{line}: {module.name} ({layer}) "
                    f"imports {target} ({other})")
    return found


def test_the_walk_finds_the_engine():
    assert {"skein", "skein.spec", "skein.simulation.expectations", "skein.demo.fleet"} <= set(MODULES)


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in MODULES if layer_of(name) is None)
    assert not unplaced, (
        "modules without a layer (add each to FOUNDATION or APP, or its package to PACKAGES, "
        "in tests/test_architecture.py):\n  " + "\n  ".join(unplaced))


def test_no_module_is_over_the_size_limit():
    found = _new(module_size_violations())
    assert not found, _report(found, f"modules over {MAX_MODULE_LINES} lines (split them by what "
                                     "they own)")


def test_no_function_is_over_the_size_limit():
    found = _new(function_size_violations())
    assert not found, _report(found, f"functions over {MAX_FUNCTION_LINES} lines")


def test_no_module_uses_another_modules_private_names():
    found = _new(private_use_violations())
    assert not found, _report(found, "private names used from another module (make the name "
                                     "public where it is defined, or move the code that needs it)")


def test_no_module_imports_a_higher_layer():
    found = _new(layer_violations())
    order = " < ".join(LAYERS)
    assert not found, _report(found, f"imports of a higher layer ({order}; demo may import only "
                                     "the foundation and itself)")


def test_allowed_violations_still_exist():
    """An allowance whose violation is gone must go too, so ALLOWED only shrinks."""
    found = {**module_size_violations(), **function_size_violations(),
             **private_use_violations(), **layer_violations()}
    stale = sorted(ALLOWED - set(found))
    assert not stale, "fixed: remove from ALLOWED in tests/test_architecture.py:\n  " + \
        "\n  ".join(map(str, stale))


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import loops of ``graph`` (module -> modules it imports): Tarjan's strongly
    connected components of more than one module, each sorted.

    >>> import_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}})
    [['a', 'b']]
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            loop = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(loop) > 1:
                loops.append(sorted(loop))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(loops)


def engine_graph() -> dict[str, set[str]]:
    return {m.name: {t for _, t, _ in imports(m) if t in MODULES and t != m.name}
            for m in MODULES.values()}


def plugin_graph() -> dict[str, set[str]]:
    """skein_airflow's modules and the skein_airflow modules each imports (``ast``, as above)."""
    root = INCLUDE.parent / "plugins"
    names = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "skein_airflow").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
                       if isinstance(node, ast.ImportFrom) and not node.level else [])
            for target in targets:
                while target and target not in names:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def test_no_import_cycles_in_the_engine():
    loops = import_cycles(engine_graph())
    assert not loops, "modules that import each other (move what both need into a module " \
        "of its own, or pass it in):\n  " + "\n  ".join(" <-> ".join(loop) for loop in loops)


def test_no_import_cycles_in_the_plugin():
    graph = plugin_graph()
    assert "skein_airflow.campaign_dags" in graph and graph["skein_airflow.approval"]
    loops = import_cycles(graph)
    assert not loops, "plugin modules that import each other:\n  " + \
        "\n  ".join(" <-> ".join(loop) for loop in loops)
