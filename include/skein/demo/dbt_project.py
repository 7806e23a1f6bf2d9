"""The demo dbt project (music-dbt): its YAML files, its macro, and a tiny Jinja renderer.

The renderer exists so the build can deploy each model's SQL into the warehouse "as if
dbt had run", without dbt. It is the demo's own, deliberately separate from
``skein.dbt``: the fleet must not depend on the code it is used to test.

>>> render("select * from {{ source('music_raw', 'play_events') }}", "analytics.x", {})
'select * from analytics.plays\\n'
>>> render("select {{ ms_to_seconds('ms') }} from {{ ref('a') }}", "analytics.x", {"a": "m.a"})
'select (ms / 1000.0) from m.a\\n'
"""

from __future__ import annotations

from typing import Mapping

import jinja2
import jinja2.sandbox
import yaml

from skein.demo.model import DBT_TARGET_SCHEMA

PROJECT = "music"
VARS = {"min_ms_played": 30000, "report_start": "2024-03-01"}
# source name -> (schema, {table name: identifier}); ``schema`` defaults to the name.
SOURCES = {
    "analytics": (None, {t: t for t in ("plays", "users", "tracks", "artists")}),
    "music_raw": ("analytics", {"play_events": "plays"}),
    # Declared by the platform team with the migration target, so models can move to it.
    "analytics_v2": (None, {"plays": "plays"}),
}
MACROS = {
    "ms_to_seconds.sql": (
        "{% macro ms_to_seconds(column) -%}\n"
        "    ({{ column }} / 1000.0)\n"
        "{%- endmacro %}\n"
    ),
}


def _source(name: str, table: str) -> str:
    """What ``source('name', 'table')`` resolves to: ``schema.identifier``."""
    schema, tables = SOURCES[name]
    return f"{schema or name}.{tables[table]}"


def render(text: str, relation: str, refs: Mapping[str, str]) -> str:
    """Render a model (or analysis) of the demo project to plain DuckDB SQL.

    Only the demo's own templates (``MACROS`` and the template families) come here, never a
    consumer repository's files; sandboxed all the same, so that stays harmless if it changes.
    """
    env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined,
                                              keep_trailing_newline=True)
    template = env.from_string("".join(MACROS.values()) + text)

    def var(name, default=None):
        """``var(name, default)``: the project's vars, else the default."""
        return VARS.get(name, default)

    sql = template.render(
        ref=lambda *parts: refs[parts[-1]], source=_source, config=lambda **_: "",
        is_incremental=lambda: False, var=var, this=relation,
        env_var=lambda _name, default="": default)
    # Rendering leaves blank lines where config() and macro definitions were.
    lines = [line.rstrip() for line in sql.strip().splitlines()]
    return "\n".join(line for i, line in enumerate(lines)
                     if line or (i and lines[i - 1])) + "\n"


def project_files() -> dict[str, str]:
    """The project's non-model files: dbt_project.yml, profiles.yml, sources, macros."""
    project = {
        "name": PROJECT, "version": "1.0.0", "config-version": 2, "profile": PROJECT,
        "model-paths": ["models"], "macro-paths": ["macros"], "analysis-paths": ["analyses"],
        "target-path": "target", "clean-targets": ["target", "dbt_packages"],
        "vars": VARS,
        # Folder-level custom schema: models/reporting/* land in <target>_reporting.
        "models": {PROJECT: {"+materialized": "view", "reporting": {"+schema": "reporting"}}},
    }
    profiles = {PROJECT: {"target": "dev", "outputs": {"dev": {
        "type": "duckdb", "path": "../../warehouse.duckdb", "schema": DBT_TARGET_SCHEMA,
        "threads": 4}}}}
    sources = {"version": 2, "sources": [
        {"name": name, **({"schema": schema} if schema else {}),
         "tables": [{"name": t, **({"identifier": i} if i != t else {})}
                    for t, i in tables.items()]}
        for name, (schema, tables) in SOURCES.items()]}

    def dump(data) -> str:
        """YAML in the key order given, block style."""
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)

    files = {
        "dbt_project.yml": dump(project),
        "profiles.yml": dump(profiles),
        "models/sources.yml": dump(sources),
        ".gitignore": "target/\ndbt_packages/\nlogs/\n",
    }
    files.update({f"macros/{name}": text for name, text in MACROS.items()})
    return files
