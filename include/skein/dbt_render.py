"""The dbt renderer's child process: a project's macros and models rendered in a
``BoundedSandbox``, in a process limited by ``skein.jinja_process.serve``.

``python -m skein.dbt_render`` reads JSON messages on stdin: ``hello`` (the project: its
relations, vars, sources, configs and macro files) and then ``render`` (a model's text).
It has no other input: no file, environment variable or network. The parent side is
``skein.dbt.DbtProject``.

>>> from skein.dbt import DbtProject
>>> project = DbtProject(root=Path("/p"), name="m", model_paths=["models"], macro_paths=[],
...                      vars={"n": 3}, target_schema="dbt", models_config={},
...                      sources={("analytics", "plays"): "analytics.plays"})
>>> state = RenderState(project, [("macros/m.sql", "{% macro twice(x) %}{{ x }} * 2{% endmacro %}")])
>>> state.render("select {{ twice(var('n')) }} from {{ source('analytics', 'plays') }}", "dbt.a", "a")
{'ok': True, 'sql': 'select 3 * 2 from analytics.plays', 'configs': {}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from skein.jinja_process import TEMPLATE_PREFIX, describe, serve
from skein.jinja_sandbox import MAX_LENGTH, BoundedSandbox, plain

MAX_RENDERED = 4 * MAX_LENGTH  # a model's macros may expand it, but not without bound


class RenderState:
    """One project's sandboxed environment, with its macros loaded (or why they did not)."""

    def __init__(self, project, macro_files: list[tuple[str, str]]):
        from skein.dbt import DbtRenderError

        self.project, self.error_class = project, DbtRenderError
        self.env = _environment(project)
        self.macro_error: str | None = None
        for name, text in macro_files:
            try:
                code = self.env.compile(text, name=name, filename=TEMPLATE_PREFIX + name)
                template = self.env.template_class.from_code(self.env, code, self.env.globals)
                module = template.make_module({"_skein": {"this": "this", "_configs": None},
                                               "this": "this"})
            except Exception as exc:  # noqa: BLE001 - any failure of the consumer's macros
                self.macro_error = f"cannot load project macros: {describe(exc)}"
                break
            for macro in dir(module):
                if not macro.startswith("_"):
                    self.env.globals[macro] = getattr(module, macro)

    def render(self, text: str, this: str, model: str | None) -> dict[str, Any]:
        if self.macro_error:
            raise self.error_class(self.macro_error)
        configs: dict[str, Any] | None = {} if model else None
        # `this` is a variable in dbt, not a function: bound per render.
        sql = self.env.from_string(text).render(_skein={"this": this, "_configs": configs},
                                                this=this)
        if len(sql) > MAX_RENDERED:
            raise self.error_class(f"cannot render Jinja: the rendered text is over "
                                   f"{MAX_RENDERED >> 20} MiB: refused")
        if model:
            self.project.configs[model] = plain(configs)
        return {"ok": True, "sql": sql, "configs": plain(configs) if model else None}


def _environment(project) -> BoundedSandbox:
    from skein.dbt import DbtRenderError

    env = BoundedSandbox(keep_trailing_newline=True, extensions=["jinja2.ext.do"])

    @jinja2.pass_context
    def ref(ctx, *args, **_kwargs):
        return project.relation(str(args[-1])) if args else ""

    def source(source_name, table_name):
        key = (source_name, table_name)
        if key not in project.sources:
            raise DbtRenderError(f"source({str(source_name)[:80]!r}, {str(table_name)[:80]!r}) is "
                                 "not declared in the project's YAML")
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
            raise DbtRenderError(f"var({str(name)[:80]!r}) has no value in dbt_project.yml and "
                                 "no default")
        return default

    env.globals.update(
        ref=ref, source=source, config=config, var=var,
        is_incremental=lambda: False,
        env_var=lambda name, default="": default,  # never the renderer's (empty) environment
        target={"schema": project.target_schema, "name": "skein"},
    )
    return env


_state: RenderState | None = None


def handle(message: dict) -> dict:
    """One message from the parent (``skein.dbt.DbtProject``)."""
    global _state
    if message.get("op") == "hello":
        from skein.dbt import project_from_message

        _state = RenderState(project_from_message(message["project"]),
                             [tuple(pair) for pair in message["macros"]])
        return {"ok": True}
    if _state is None:
        return {"ok": False, "error": "the renderer was not given a project"}
    return _state.render(str(message["text"]), str(message["this"]), message.get("model"))


def _warm() -> None:
    """Render once so every lazily imported module is loaded before files are closed off."""
    from skein.dbt import DbtProject

    project = DbtProject(root=Path("/"), name="w", model_paths=["models"], macro_paths=[],
                         vars={}, target_schema="w", models_config={})
    state = RenderState(project, [("m.sql", "{% macro m() %}{{ 1 / 0 }}{% endmacro %}")])
    state.render("{{ [1, 2] | join(',') }}{% do [].append(1) %}{{ 'a' ~ 'b' }}", "this", "w")
    for failing in ("{{ m() }}", "{{ nothing }}", "{% if %}", "{{ ''.__class__ }}",
                    "{{ 'x' * 10**9 }}", "{{ var('v') }}"):
        try:  # error paths import modules too (jinja2.debug rewrites tracebacks)
            state.render(failing, "this", None)
        except Exception as exc:  # noqa: BLE001
            describe(exc)


if __name__ == "__main__":
    serve(handle, _warm)
