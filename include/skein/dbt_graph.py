"""Read a dbt project with dbt-core's own parser, in the sandbox of skein.dbt_sandbox.

``read_dbt_graph(root)`` copies the project into a temporary folder, puts stand-ins for its
uninstalled packages (skein.dbt_packages) and a sandbox profile there, runs ``dbt parse`` and
``dbt compile`` in the isolated dbt interpreter, and returns the manifest as frozen data with,
per node, its compiled SQL or why it did not compile. Compile runs against an empty sandbox
DuckDB: a model whose macros introspect the warehouse (``run_query``, ``adapter.get_columns_
in_relation``) or call a missing package does not compile, and says so.

When dbt cannot parse the project (or is not installed), the graph comes from Skein's own
renderer (skein.dbt) instead: ``parser`` says which path was taken and ``reason`` why.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from skein import dbt as home_made
from skein.errors import first_line
from skein.dbt_manifest import Column, Manifest, Node, SourceTable, read_manifest
from skein.dbt_packages import StandIn, install_stand_ins
from skein.dbt_sandbox import (DbtSandboxError, DbtSettings, copy_project, dbt_settings,
                               project_config, project_profile_name, run_child, sandbox_profile,
                               target_schema)
from skein.dbt_seeds import seed_columns


@dataclass(frozen=True)
class DbtGraph:
    root: str
    parser: str  # "dbt" (dbt-core's parser) or "fallback" (skein.dbt's renderer)
    manifest: Manifest
    reason: str | None = None  # why the fallback was taken
    stand_ins: tuple[StandIn, ...] = ()
    seeds: tuple[tuple[str, tuple[Column, ...]], ...] = ()  # seed id -> columns from its CSV
    timings: tuple[tuple[str, float], ...] = ()  # dbt command -> seconds

    def models(self) -> list[Node]:
        return self.manifest.of_type("model")

    def compiled_models(self) -> list[Node]:
        return [n for n in self.models() if n.compiled_code is not None]


def read_dbt_graph(root: Path, settings: DbtSettings | None = None) -> DbtGraph:
    """The graph of the dbt project at ``root`` (never written), by dbt or by the fallback."""
    root = Path(root).resolve()
    try:
        return _read_with_dbt(root, settings or dbt_settings())
    except DbtSandboxError as exc:
        reason = str(exc)
    try:
        return fallback_graph(root, reason)
    except (OSError, yaml.YAMLError, home_made.DbtRenderError) as exc:
        raise DbtSandboxError(f"{root}: dbt cannot read the project ({reason}), nor Skein's "
                              f"renderer ({type(exc).__name__}: {first_line(exc)})") from None


def _read_with_dbt(root: Path, settings: DbtSettings) -> DbtGraph:
    with tempfile.TemporaryDirectory(prefix="skein-dbt-") as tmp:
        work = Path(tmp)
        copy = work / "project"
        copy_project(root, copy)  # its failures are DbtSandboxErrors
        (work / "home").mkdir()
        profile = project_profile_name(copy)
        schema = target_schema(copy, profile)
        stand_ins = install_stand_ins(copy, packages_folder(copy))
        (copy / "profiles.yml").write_text(
            sandbox_profile(profile, work / "sandbox.duckdb", schema), encoding="utf-8")
        output = run_child(settings, copy, work / "home", work / "result.json")
        steps = json.loads((work / "result.json").read_text(encoding="utf-8"))
        if not steps["parse"]["ok"]:
            raise DbtSandboxError(f"dbt parse failed: {_first_error(steps['parse']['error'] or output)}")
        target = copy / "target"
        raw = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
        manifest = read_manifest(raw, compile_errors(raw, steps.get("compile") or {}))
        seeds = tuple((n.unique_id, seed_columns(copy / n.path, dict(n.config)))
                      for n in manifest.of_type("seed"))
    timings = tuple((name, step["seconds"]) for name, step in steps.items())
    return DbtGraph(root=str(root), parser="dbt", manifest=manifest, stand_ins=tuple(stand_ins),
                    seeds=seeds, timings=timings)


def packages_folder(project: Path) -> str:
    """``packages-install-path`` of dbt_project.yml, else dbt's default."""
    return str(project_config(project).get("packages-install-path") or "dbt_packages")


def compile_errors(manifest: dict, step: dict) -> dict[str, str]:
    """Why each node dbt did not compile failed, by unique id: the files the child excluded
    after they failed, and, when compile stopped on something else, that for the rest.

    >>> m = {"nodes": {"model.p.a": {"original_file_path": "models/a.sql"}}}
    >>> compile_errors(m, {"ok": True, "failed": {"models/a.sql": "Compilation Error: x"}})
    {'model.p.a': 'Compilation Error: x'}
    """
    by_path = {n["original_file_path"]: uid for uid, n in manifest["nodes"].items()}
    errors = {by_path[p]: _first_error(e) for p, e in (step.get("failed") or {}).items()
              if p in by_path}
    if not step.get("ok"):
        reason = f"dbt compile stopped: {_first_error(step.get('error') or 'no compile run')}"
        for uid, node in manifest["nodes"].items():
            if uid not in errors and node.get("compiled_code") is None:
                errors[uid] = reason
    return errors


def _first_error(text: str) -> str:
    """dbt's multi-line error as one line: its meaningful lines joined.

    >>> _first_error("Runtime Error\\n Compilation Error in model a (models/a.sql)\\n  'x' is undefined")
    "Compilation Error in model a (models/a.sql): 'x' is undefined"
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip() != "Runtime Error"]
    return ": ".join(lines[:2])[:500] or "unknown error"


_REF = re.compile(r"\bref\(\s*(?:['\"][^'\"]+['\"]\s*,\s*)?['\"]([^'\"]+)['\"]")


def fallback_graph(root: Path, reason: str) -> DbtGraph:
    """The graph from Skein's own renderer: models with their rendered SQL and ``ref()``
    names, declared sources without columns. Coarser than dbt's (no tests, no semantic
    models, no versions): the path taken when dbt cannot parse the project."""
    project = home_made.load_dbt_project(root)
    nodes = []
    for path in sorted(root.rglob("*.sql")):
        if not project.is_model(path) or project.is_skipped(path):
            continue
        raw = path.read_text(encoding="utf-8")
        try:
            compiled, error = project.render(path).sql, None
        except home_made.DbtRenderError as exc:
            compiled, error = None, str(exc)
        schema, alias = project.relation(path.stem).split(".", 1)
        nodes.append(Node(unique_id=f"model.{project.name}.{path.stem}", resource_type="model",
                          name=path.stem, path=path.relative_to(root).as_posix(), database="",
                          schema=schema, alias=alias, refs=tuple(_REF.findall(raw)),
                          raw_code=raw, compiled_code=compiled, compile_error=error))
    sources = [SourceTable(unique_id=f"source.{project.name}.{s}.{t}", source_name=s, name=t,
                           identifier=rel.split(".", 1)[1], database="", schema=rel.split(".", 1)[0],
                           path="") for (s, t), rel in sorted(project.sources.items())]
    by_id = {n.unique_id: n for n in nodes} | {s.unique_id: s for s in sources}
    manifest = Manifest(project=project.name, nodes=tuple(nodes), sources=tuple(sources),
                        by_id=by_id)
    return DbtGraph(root=str(root), parser="fallback", manifest=manifest, reason=reason)
