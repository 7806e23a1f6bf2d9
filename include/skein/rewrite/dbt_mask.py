"""dbt files for the agents: the project (cached) and a Jinja masker bound to one model.

Both the rule agent (to edit) and the scope check (to judge) mask a model's Jinja
with the project's own relations, macros and vars.
"""

from __future__ import annotations

import functools
from pathlib import Path

from skein.rewrite.request import RewriteRequest
from skein.rewrite.jinja import JinjaMask, mask_jinja


class DbtMasker:
    """Masks a dbt file's Jinja with the project's own context (relations, macros, vars)."""

    def __init__(self, project, this: str, root: str | None = None):
        self.project = project
        self.this = this
        self.root = root  # the key ``dbt_project`` loaded the project with (renders are cached by it)

    def render(self, expression: str) -> str:
        if self.root is None:
            return self.project.render_snippet("{{ " + expression + " }}", this=self.this)
        return _render(self.root, self.this, expression)

    def mask(self, text: str) -> JinjaMask:
        return mask_jinja(text, self.render)

    def for_scope_check(self, text: str):
        mask = mask_jinja(text, self.render, keep_offsets=False)
        return mask.text, mask.tables, [(text[s:e], text.count("\n", 0, s) + 1)
                                        for s, e in mask.spans]


@functools.lru_cache(maxsize=4096)
def _render(root: str, this: str, expression: str) -> str:
    """Compiling a Jinja template costs ~1 ms; a project's snippets repeat across its models.
    Keyed like ``dbt_project``: by the project's root."""
    return dbt_project(root).render_snippet("{{ " + expression + " }}", this=this)


@functools.lru_cache(maxsize=32)
def dbt_project(root: str):
    from skein.dbt import load_dbt_project

    return load_dbt_project(Path(root))


def jinja_masker(request: RewriteRequest) -> DbtMasker | None:
    if not request.dbt_project_root:
        return None
    project = dbt_project(request.dbt_project_root)
    path = Path(request.consumer_path) if request.consumer_path else None
    this = project.relation(path.stem) if path is not None and project.is_model(path) else "this"
    return DbtMasker(project, this, root=request.dbt_project_root)
