"""Rule: point every reference to the source dataset at the target.

>>> from skein.rewrite.testing import run_rule
>>> run_rule(retarget_tables, "SELECT play_id FROM analytics.plays AS p", {})
'SELECT play_id FROM analytics_v2.plays AS p'
>>> run_rule(retarget_tables, "SELECT PLAY_ID FROM ANALYTICS.PLAYS", {}, dialect="snowflake")
'SELECT PLAY_ID FROM ANALYTICS_V2.PLAYS'
>>> run_rule(retarget_tables, "SELECT play_id FROM `acme.analytics.plays`", {}, dialect="bigquery")
'SELECT play_id FROM `acme.analytics_v2.plays`'
"""

from __future__ import annotations

from skein.rewrite.edits import Edit
from skein.rewrite.references import SourceRefs, TableRef
from skein.rewrite.render import style_of
from skein.rewrite.rules.context import Escalate, RuleContext


def retarget_tables(ctx: RuleContext, refs: SourceRefs) -> list[Edit]:
    target_db, _, target_table = ctx.request.target.rpartition(".")
    edits = []
    for ref in refs.tables:
        edits.extend(_retarget(ctx, ref, target_db, target_table, refs))
    return edits


def _retarget(ctx: RuleContext, ref: TableRef, target_db: str, target_table: str,
              refs: SourceRefs) -> list[Edit]:
    table = ref.node
    why = f"read {ctx.request.target} instead of {ctx.request.source}"
    placeholder = table.name
    if placeholder in ctx.jinja_tables:
        start, end = ctx.jinja_spans[placeholder]  # the whole {{ source(...) }} call
        return [Edit(start, end, _dbt_call(ctx), why)]
    parts = [p for p in (table.args.get("catalog"), table.args.get("db"), table.this) if p is not None]
    starts = {p.meta.get("start") for p in parts}
    if len(parts) > 1 and len(starts) == 1:  # one quoted token: `project.dataset.table`
        start, end = ctx.span(table.this)
        written = ctx.text[start:end]
        quote = written[0]
        names = [p.name for p in parts]
        names[-2:] = [target_db, target_table] if len(names) >= 2 else names[-2:]
        return [Edit(start, end, f"{quote}{'.'.join(names)}{written[-1]}", why)] + \
            _alias_edit(ctx, ref, refs, end, target_table)
    edits = []
    this_start, this_end = ctx.span(table.this)
    style = style_of(ctx.written(table.this), ctx.dialect)
    new_table = style.identifier(target_table)
    db = table.args.get("db")
    if db is not None:
        db_start, db_end = ctx.span(db)
        edits.append(Edit(db_start, db_end, style_of(ctx.written(db), ctx.dialect).identifier(target_db), why))
    elif target_db and target_db != ctx.request.default_schema:
        new_table = f"{style.identifier(target_db)}.{new_table}"
    if new_table != ctx.text[this_start:this_end]:
        edits.append(Edit(this_start, this_end, new_table, why))
    return edits + _alias_edit(ctx, ref, refs, this_end, target_table)


def _alias_edit(ctx, ref: TableRef, refs: SourceRefs, end: int, target_table: str) -> list[Edit]:
    """Columns qualified with the old table name keep working when the name changes."""
    old_name = ref.node.name.lower()
    if ref.alias or old_name == target_table.lower():
        return []
    qualified = ref.qualified_by_name or any(
        c.needs_qualifier and c.source_alias == old_name for c in refs.columns) or any(
        s.qualify_all for s in refs.stars)
    if not qualified:
        return []
    return [Edit(end, end, f" AS {ctx.written(ref.node.this)}",
                 "keep the old name as alias: columns are qualified with it")]


def _dbt_call(ctx: RuleContext) -> str:
    """The dbt Jinja call that reads the target, from the project's declared sources."""
    for call, relation in sorted(ctx.request.dbt_relations.items()):
        if relation == ctx.request.target:
            return "{{ " + call + " }}"
    raise Escalate(f"no dbt source or model declares {ctx.request.target}: add it to the project's "
                   "sources YAML, then rerun")


