"""Render dbt models to plain SQL without running dbt.

dbt itself cannot render a project without a live adapter connection, and
installing it next to Airflow drags in a second dependency tree; what discovery
needs is small: ``ref``/``source``/``config``/``var``/``is_incremental`` and the
project's own macros, rendered with Jinja (dbt's templating engine).

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

import jinja2
import yaml

SKIPPED_DIRS = ("target", "dbt_packages", "logs", "dbt_modules")


class DbtRenderError(Exception):
    """A model's Jinja cannot be rendered (unknown macro, bad syntax)."""


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
    _configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> config(...)
    _paths: dict[str, Path] = field(default_factory=dict)  # model -> file
    _env: jinja2.Environment | None = None

    def is_model(self, path: Path) -> bool:
        rel = path.resolve().relative_to(self.root)
        return rel.parts[0] in self.model_paths if rel.parts else False

    def is_skipped(self, path: Path) -> bool:
        rel = path.resolve().relative_to(self.root)
        return bool(rel.parts) and (rel.parts[0] in self.macro_paths or rel.parts[0] in SKIPPED_DIRS)

    def relation(self, model: str) -> str:
        """``schema.alias`` of a model, following dbt's default ``generate_schema_name``."""
        config = self._configs.get(model, {})
        custom = config.get("schema") or self._dir_config(model, "+schema")
        schema = f"{self.target_schema}_{custom}" if custom else self.target_schema
        return f"{schema}.{config.get('alias') or model}".lower()

    def _dir_config(self, model: str, key: str):
        node = self.models_config.get(self.name) or {}
        value = node.get(key) if isinstance(node, dict) else None
        path = self._paths.get(model)
        if path is None:
            return value
        rel = path.resolve().relative_to(self.root)
        for part in rel.parts[1:-1]:  # folders below the model path
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

    def _render(self, text: str, this: str, configs: dict | None = None) -> str:
        env = self._environment()
        context = {"this": this, "_configs": configs}
        try:
            # `this` is a variable in dbt, not a function: bound per render.
            return env.from_string(text).render(_skein=context, this=this)
        except jinja2.TemplateError as exc:
            line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
            raise DbtRenderError(f"cannot render Jinja{line}: {exc.message or exc}") from None

    def _environment(self) -> jinja2.Environment:
        if self._env is not None:
            return self._env
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 extensions=["jinja2.ext.do"])
        project = self

        @jinja2.pass_context
        def ref(ctx, *args, **_kwargs):
            return project.relation(args[-1])

        def source(source_name, table_name):
            key = (source_name, table_name)
            if key not in project.sources:
                raise DbtRenderError(f"source({source_name!r}, {table_name!r}) is not declared "
                                     "in the project's YAML")
            return project.sources[key]

        @jinja2.pass_context
        def config(ctx, **kwargs):
            configs = ctx["_skein"]["_configs"]
            if configs is not None:
                configs.update(kwargs)
            return ""

        def var(name, default=None):
            if name in project.vars:
                return project.vars[name]
            if default is None:
                raise DbtRenderError(f"var({name!r}) has no value in dbt_project.yml and no default")
            return default

        env.globals.update(
            ref=ref, source=source, config=config, var=var,
            is_incremental=lambda: False,
            env_var=lambda name, default="": default,
            target={"schema": self.target_schema, "name": "skein"},
        )
        macros = "\n".join(p.read_text(encoding="utf-8") for p in self._macro_files())
        try:
            module = env.from_string(macros).make_module(
                {"_skein": {"this": "this", "_configs": None}, "this": "this"})
        except jinja2.TemplateError as exc:
            raise DbtRenderError(f"cannot load project macros: {exc}") from None
        for name in dir(module):
            if not name.startswith("_"):
                env.globals[name] = getattr(module, name)
        self._env = env
        return env

    def _macro_files(self) -> list[Path]:
        files: list[Path] = []
        for folder in self.macro_paths:
            files.extend(sorted((self.root / folder).rglob("*.sql")))
        return files

    def collect_configs(self, model_files: list[Path]) -> list[str]:
        """First pass: read every model's ``config(...)`` so refs resolve to final names."""
        problems = []
        for path in model_files:
            self._paths[path.stem] = path
        for path in model_files:
            configs: dict[str, Any] = {}
            try:
                self._render(path.read_text(encoding="utf-8"), this=path.stem, configs=configs)
            except (DbtRenderError, OSError):
                problems.append(str(path))  # reported again when the model is rendered
            self._configs[path.stem] = configs
        return problems


_REF = re.compile(r"\{\{\s*ref\(\s*(?:['\"][^'\"]+['\"]\s*,\s*)?['\"]([^'\"]+)['\"][^)]*\)\s*\}\}")
_SOURCE = re.compile(r"\{\{\s*source\(\s*['\"]([^'\"]+)['\"]\s*,\s*['\"]([^'\"]+)['\"]\s*\)\s*\}\}")


def substitute_relations(project: DbtProject, text: str) -> str:
    """Best-effort: replace plain ``{{ ref() }}``/``{{ source() }}`` in a model that cannot
    be rendered, so discovery can still tell which datasets it mentions.

    >>> p = DbtProject(root=Path("/x"), name="m", model_paths=["models"], macro_paths=[],
    ...                vars={}, target_schema="dbt", models_config={},
    ...                sources={("analytics", "plays"): "analytics.plays"})
    >>> substitute_relations(p, "select * from {{ ref('a') }} join {{ source('analytics','plays') }}")
    'select * from dbt.a join analytics.plays'
    """
    text = _REF.sub(lambda m: project.relation(m.group(1)), text)
    return _SOURCE.sub(lambda m: project.sources.get((m.group(1), m.group(2)), m.group(0)), text)


def load_dbt_project(root: Path, files: list[Path] | None = None) -> DbtProject:
    """Read a project; ``files`` (default: every .sql below it) are the candidate models."""
    root = root.resolve()
    config = yaml.safe_load((root / "dbt_project.yml").read_text(encoding="utf-8")) or {}
    project = DbtProject(
        root=root,
        name=str(config.get("name", root.name)),
        model_paths=list(config.get("model-paths") or config.get("source-paths") or ["models"]),
        macro_paths=list(config.get("macro-paths") or ["macros"]),
        vars=dict(config.get("vars") or {}),
        target_schema=_target_schema(root, config.get("profile")),
        models_config=dict(config.get("models") or {}),
    )
    for folder in project.model_paths:
        for yml in sorted((root / folder).rglob("*.yml")) + sorted((root / folder).rglob("*.yaml")):
            _read_sources(yml, project.sources)
    candidates = files if files is not None else sorted(root.rglob("*.sql"))
    project.collect_configs([f for f in candidates if project.is_model(f)])
    return project


def _target_schema(root: Path, profile: str | None) -> str:
    """The target's ``schema`` from a profiles.yml next to the project, else ``main``."""
    path = root / "profiles.yml"
    if not path.is_file():
        return "main"
    profiles = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entry = profiles.get(profile) if profile else next(iter(profiles.values()), None)
    if not isinstance(entry, dict):
        return "main"
    output = (entry.get("outputs") or {}).get(entry.get("target", "dev")) or {}
    return str(output.get("schema", "main")).lower()


def _read_sources(path: Path, sources: dict[tuple[str, str], str]) -> None:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return  # a broken schema file only hides its sources; render errors will say which
    for src in doc.get("sources") or []:
        schema = src.get("schema") or src["name"]
        for table in src.get("tables") or []:
            sources[(src["name"], table["name"])] = f"{schema}.{table.get('identifier') or table['name']}".lower()


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
