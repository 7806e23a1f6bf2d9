"""Rule: a USING join on a column the campaign changes becomes an explicit ON join.

``USING (user_id)`` cannot name ``account_id`` on one side only. The join is written
as ``ON p.account_id = u.user_id``, and the merged column's unqualified references
take the source side's value (what USING returns for inner and left joins; right and
full joins escalate).

>>> from skein.rewrite.testing import run_rule
>>> run_rule(rewrite_using, "SELECT user_id, plan FROM analytics.plays AS p "
...          "JOIN analytics.users AS u USING (user_id)", {"user_id": "account_id"})
'SELECT p.account_id AS user_id, plan FROM analytics.plays AS p JOIN analytics.users AS u ON p.account_id = u.user_id'
"""

from __future__ import annotations

import re

from sqlglot import exp
from sqlglot.optimizer.scope import build_scope

from skein.rewrite.edits import Edit
from skein.rewrite.references import SourceRefs
from skein.rewrite.render import mapped_expression, style_of
from skein.rewrite.rules.context import Escalate, RuleContext


def rewrite_using(ctx: RuleContext, refs: SourceRefs) -> list[Edit]:
    edits: list[Edit] = []
    for join in refs.using_joins:
        columns = [i.name.lower() for i in join.args["using"]]
        if not any(_changes(ctx, c) for c in columns):
            continue
        sides = _sides(ctx, join, refs)
        if sides is None:
            continue
        source_q, other_q, source_is_left = sides
        kind = (join.side or "").upper()
        if kind in ("RIGHT", "FULL"):
            raise Escalate(f"a {kind} JOIN ... USING on a changed column: the merged column would "
                           "change meaning; rewrite it by hand or with the LLM agent")
        conditions = []
        for column in columns:
            mapped = ctx.request.mapping_for(column)
            if mapped is None:
                raise Escalate(f"joins on {column} with USING, which the campaign drops")
            style = style_of(column, ctx.dialect)
            source_side = mapped_expression(mapped, ctx.request.columns_dialect, source_q, style)
            # The left table's side first, as USING (and the scope check) reads it.
            pair = (source_side, f"{other_q}.{column}") if source_is_left else \
                (f"{other_q}.{column}", source_side)
            conditions.append(" = ".join(pair))
        edits.append(_using_edit(ctx, join, "ON " + " AND ".join(conditions)))
        # Inner and left joins: the merged column is the left side's value.
        edits.extend(_merged_references(ctx, join, columns, source_q if source_is_left else None,
                                        other_q))
    return edits


def _changes(ctx: RuleContext, column: str) -> bool:
    mapped = ctx.request.mapping_for(column)
    return column in ctx.request.source_columns and (mapped or "").strip().lower() != column


def _written(table: exp.Expression) -> str:
    name = table.alias_or_name if isinstance(table, (exp.Table, exp.Subquery)) else ""
    if not name:
        raise Escalate(f"USING join with `{table.sql()}`, which has no name to qualify columns with")
    return name


def _sides(ctx: RuleContext, join: exp.Join, refs: SourceRefs) -> tuple[str, str, bool] | None:
    source_tables = {id(t.node) for t in refs.tables}
    right = join.this
    select = join.parent_select
    left_tables = [select.args["from_"].this] if select and select.args.get("from_") else []
    for other in select.args.get("joins") or []:
        if other is join:
            break
        left_tables.append(other.this)
    if id(right) in source_tables:
        if len(left_tables) != 1:
            raise Escalate("USING join of the source with several tables on its left")
        return _written(right), _written(left_tables[0]), False
    if any(id(t) in source_tables for t in left_tables):
        source = next(t for t in left_tables if id(t) in source_tables)
        return _written(source), _written(right), True
    return None


def _using_edit(ctx: RuleContext, join: exp.Join, text: str) -> Edit:
    idents = join.args["using"]
    first = min(i.meta["start"] for i in idents)
    match = list(re.finditer(r"using\s*\(", ctx.text[:first], flags=re.I))
    if not match:
        raise Escalate("cannot locate the USING clause in the text")
    start = match[-1].start()
    end = ctx.text.find(")", max(i.meta["end"] for i in idents))
    if end < 0:
        raise Escalate("cannot locate the end of the USING clause in the text")
    end += 1
    return Edit(start, end, text, "USING cannot name a renamed column on one side only")


def _merged_references(ctx: RuleContext, join: exp.Join, columns: list[str],
                       source_q: str | None, other_q: str) -> list[Edit]:
    """Unqualified uses of the merged column: the source's expression when the source is
    the left side, else the other table's (unchanged) column."""
    select = join.parent_select
    root = build_scope(select.root() if isinstance(select.root(), exp.Query) else select)
    scope = next((s for s in root.traverse() if s.expression is select), None) if root else None
    edits = []
    for column in scope.columns if scope else []:
        name = column.name.lower()
        if column.table or name not in columns or "start" not in column.this.meta:
            continue
        written = ctx.text[column.this.meta["start"]:column.this.meta["end"] + 1]
        if source_q is None:
            text = f"{other_q}.{written}"
        else:
            text = mapped_expression(ctx.request.mapping_for(name), ctx.request.columns_dialect,
                                     source_q, style_of(written, ctx.dialect))
        parent = column.parent
        if isinstance(parent, exp.Select) and column in parent.expressions:
            text += f" AS {written}"
        start, end = column.this.meta["start"], column.this.meta["end"] + 1
        edits.append(Edit(start, end, text, "the USING column is now the source side's"))
    return edits
