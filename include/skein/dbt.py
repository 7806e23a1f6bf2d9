"""Render dbt models to plain SQL without running dbt.

dbt itself cannot render a project without a live adapter connection, and
installing it next to Airflow drags in a second dependency tree; what discovery
needs is small: ``ref``/``source``/``config``/``var``/``is_incremental`` and the
project's own macros, rendered with Jinja (dbt's templating engine).

A project's Jinja is another team's code: it is rendered in a sandbox, in a child process
per project with no access to Skein's environment, files or network and with memory, CPU
and time limits (``skein.dbt_render``, ``skein.jinja_process``). Its YAML is read with the
consumer limits and checked field by field (``skein.dbt_yaml``).

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "dbt_project.yml").write_text("name: music\\nprofile: music\\n")
>>> _ = (root / "profiles.yml").write_text(
...     "music: {target: dev, outputs: {dev: {type: duckdb, schema: dbt}}}")
>>> (root / "models").mkdir()
>>> _ = (root / "models" / "src.yml").write_text(
...     "sources: [{name: analytics, tables: [{name: plays}]}]")
>>> _ = (root / "models" / "a.sql").write_text(
...     "{{ config(schema='marts') }}\\nselect user_id from {{ source('analytics', 'plays') }}")
>>> _ = (root / "models" / "b.sql").write_text("select * from {{ ref('a') }}")
>>> project = load_dbt_project(root)
>>> project.relation("a"), project.relation("b")
('dbt_marts.a', 'dbt.b')
>>> model = project.render(root / "models" / "b.sql")
>>> model.sql, model.relation
('select * from dbt_marts.a', 'dbt.b')
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skein import dbt_yaml
from skein.errors import DbtProjectError, DbtRenderError
from skein.jinja_process import RendererError, RendererProcess

__all__ = ["DbtProject", "DbtProjectError", "DbtRenderError", "RenderedModel",
           "load_dbt_project", "substitute_relations"]

SKIPPED_DIRS = ("target", "dbt_packages", "logs", "dbt_modules")
MAX_MACRO_BYTES = 8 << 20  # all of a project's macro files together


@dataclass
class RenderedModel:
    sql: str
    relation: str | None  # None for non-model files (analyses, tests)
    line_map: list[int]  # rendered line (0-based index) -> original line (1-based)

    def original_line(self, rendered_line: int) -> int:
        index = rendered_line - 1
        return self.line_map[index] if 0 <= index < len(self.line_map) else rendered_line


@dataclass
class DbtProject:
    root: Path
    name: str
    model_paths: list[str]
    macro_paths: list[str]
    vars: dict[str, Any]
    target_schema: str
    models_config: dict[str, Any]
    sources: dict[tuple[str, str], str] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> config(...)
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)  # model -> path in project
    macros: list[tuple[str, str]] = field(default_factory=list)  # (path in project, text)
    macro_error: str | None = None  # why the macro files could not be read
    _renderer: RendererProcess | None = field(default=None, repr=False, compare=False)

    def is_model(self, path: Path) -> bool:
        rel = path.resolve().relative_to(self.root)
        return rel.parts[0] in self.model_paths if rel.parts else False

    def is_skipped(self, path: Path) -> bool:
        rel = path.resolve().relative_to(self.root)
        return bool(rel.parts) and (rel.parts[0] in self.macro_paths or rel.parts[0] in SKIPPED_DIRS)

    def relation(self, model: str) -> str:
        """``schema.alias`` of a model, following dbt's default ``generate_schema_name``."""
        config = self.configs.get(model, {})
        custom = config.get("schema") or self._dir_config(model, "+schema")
        schema = f"{self.target_schema}_{custom}" if custom else self.target_schema
        return f"{schema}.{config.get('alias') or model}".lower()

    def _dir_config(self, model: str, key: str):
        node = self.models_config.get(self.name) or {}
        value = node.get(key) if isinstance(node, dict) else None
        for part in self.paths.get(model, ())[1:-1]:  # folders below the model path
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
            value = node.get(key, value)
        return value

    def render(self, path: Path, text: str | None = None) -> RenderedModel:
        """Render one file; raise ``DbtRenderError`` with Jinja's reason."""
        text = path.read_text(encoding="utf-8") if text is None else text
        model = path.stem if self.is_model(path) else None
        relation = self.relation(model) if model else None
        sql = self._render(text, this=relation or "this")
        return RenderedModel(sql=sql, relation=relation, line_map=_line_map(text, sql))

    def render_snippet(self, text: str, this: str) -> str:
        """Render a piece of Jinja (one ``{{ expr }}``) in this project's context."""
        return self._render(text, this=this)

    def _render(self, text: str, this: str, model: str | None = None) -> str:
        """Rendered in the project's renderer process; ``model``: collect its ``config()``."""
        if self.macro_error:
            raise DbtRenderError(self.macro_error)
        if self._renderer is None:
            self._renderer = RendererProcess("skein.dbt_render", self._hello)
        try:
            reply = self._renderer.request({"op": "render", "text": text, "this": this,
                                            "model": model})
        except RendererError as exc:
            raise DbtRenderError(f"cannot render Jinja: {exc}") from None
        if not reply.get("ok"):
            raise DbtRenderError(str(reply.get("error"))[:1000])
        if model:
            configs = reply.get("configs")
            self.configs[model] = configs if isinstance(configs, dict) else {}
        return str(reply.get("sql", ""))

    def _hello(self) -> dict:
        """What the renderer is told: the project as data (a replacement child is told the
        configs collected so far)."""
        return {"op": "hello", "macros": self.macros, "project": {
            "root": str(self.root), "name": self.name, "model_paths": self.model_paths,
            "macro_paths": self.macro_paths, "vars": self.vars,
            "target_schema": self.target_schema, "models_config": self.models_config,
            "sources": [[s, t, r] for (s, t), r in self.sources.items()],
            "configs": self.configs, "paths": self.paths}}

    @property
    def renderer_pid(self) -> int | None:
        """The renderer process's id while it runs (one per project, reused by every render)."""
        return self._renderer.pid if self._renderer is not None else None

    def close(self) -> None:
        """Stop the renderer process (it stops with the project, or with Skein, anyway)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def collect_configs(self, model_files: list[Path]) -> list[str]:
        """First pass: read every model's ``config(...)`` so refs resolve to final names."""
        problems = []
        for path in model_files:
            self.paths[path.stem] = path.resolve().relative_to(self.root).parts
        for path in model_files:
            try:
                self._render(path.read_text(encoding="utf-8"), this=path.stem, model=path.stem)
            except (DbtRenderError, OSError, UnicodeDecodeError):
                problems.append(str(path))  # reported again when the model is rendered
                self.configs.setdefault(path.stem, {})
        return problems


def project_from_message(message: dict) -> DbtProject:
    """The renderer's copy of a project, from ``DbtProject._hello``."""
    return DbtProject(
        root=Path(message["root"]), name=message["name"], model_paths=message["model_paths"],
        macro_paths=message["macro_paths"], vars=message["vars"],
        target_schema=message["target_schema"], models_config=message["models_config"],
        sources={(s, t): r for s, t, r in message["sources"]}, configs=message["configs"],
        paths={m: tuple(p) for m, p in message["paths"].items()})


_REF = re.compile(r"\{\{\s*ref\(\s*(?:['\"][^'\"]+['\"]\s*,\s*)?['\"]([^'\"]+)['\"][^)]*\)\s*\}\}")
_SOURCE = re.compile(r"\{\{\s*source\(\s*['\"]([^'\"]+)['\"]\s*,\s*['\"]([^'\"]+)['\"]\s*\)\s*\}\}")


def substitute_relations(project: DbtProject | None, text: str) -> str:
    """Best-effort: replace plain ``{{ ref() }}``/``{{ source() }}`` in a model that cannot
    be rendered, so discovery can still tell which datasets it mentions (without a
    readable project: ``ref('a')`` as ``a``, ``source('s', 't')`` as ``s.t``).

    >>> p = DbtProject(root=Path("/x"), name="m", model_paths=["models"], macro_paths=[],
    ...                vars={}, target_schema="dbt", models_config={},
    ...                sources={("analytics", "plays"): "analytics.plays"})
    >>> substitute_relations(p, "select * from {{ ref('a') }} join {{ source('analytics','plays') }}")
    'select * from dbt.a join analytics.plays'
    >>> substitute_relations(None, "select * from {{ source('analytics', 'plays') }}")
    'select * from analytics.plays'
    """
    if project is None:
        text = _REF.sub(lambda m: m.group(1), text)
        return _SOURCE.sub(lambda m: f"{m.group(1)}.{m.group(2)}", text)
    text = _REF.sub(lambda m: project.relation(m.group(1)), text)
    return _SOURCE.sub(lambda m: project.sources.get((m.group(1), m.group(2)), m.group(0)), text)


def load_dbt_project(root: Path, files: list[Path] | None = None) -> DbtProject:
    """Read a project; ``files`` (default: every .sql below it) are the candidate models.
    Its YAML is checked (``DbtProjectError`` names the file, line and field)."""
    root = root.resolve()
    config = dbt_yaml.read_project_config(root)
    project = DbtProject(
        root=root, name=config.name, model_paths=config.model_paths,
        macro_paths=config.macro_paths, vars=config.vars,
        target_schema=dbt_yaml.target_schema(root, config.profile), models_config=config.models)
    for yml in dbt_yaml.project_files(root, project.model_paths, ("*.yml", "*.yaml")):
        dbt_yaml.read_sources(yml, project.sources)
    _read_macros(project)
    candidates = files if files is not None else sorted(root.rglob("*.sql"))
    project.collect_configs([f for f in candidates if project.is_model(f)])
    return project


def _read_macros(project: DbtProject) -> None:
    total = 0
    for path in dbt_yaml.project_files(project.root, project.macro_paths, ("*.sql",)):
        rel = str(path.relative_to(project.root))
        try:
            data = path.read_bytes()
            total += len(data)
            if total > MAX_MACRO_BYTES:
                project.macro_error = (f"cannot load project macros: more than "
                                       f"{MAX_MACRO_BYTES >> 20} MiB of macro files: refused")
                return
            project.macros.append((rel, data.decode("utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
            project.macro_error = f"cannot load project macros: {rel}: {why}"
            return


def _line_map(original: str, rendered: str) -> list[int]:
    """Map each rendered line to the original line it came from.

    Jinja drops the lines of false ``{% if %}`` branches and of block tags, so line
    numbers shift; aligning the two texts line by line recovers the mapping.
    """
    old = original.splitlines()
    new = rendered.splitlines()
    mapping = [0] * len(new)
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for offset in range(j2 - j1):
                mapping[j1 + offset] = i1 + offset + 1
        elif tag == "replace":
            # Lines with rendered {{ }} differ from their source: pick the most similar
            # remaining source line, keeping the order.
            start = i1
            for j in range(j1, j2):
                remaining = range(start, i2) if start < i2 else range(i2 - 1, i2)
                best = max(remaining, key=lambda i: difflib.SequenceMatcher(
                    a=old[i], b=new[j], autojunk=False).ratio())
                mapping[j] = best + 1
                start = best + 1
        else:  # inserted lines (macro output): attribute them to the line before
            for j in range(j1, j2):
                mapping[j] = max(i1, 1)
    return mapping
