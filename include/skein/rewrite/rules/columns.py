"""Rule: replace every column that resolves to the source by its campaign expression.

Output names stay: a bare projection gets ``AS <old name>``. Only references that
*resolve* to the source change; same-named columns of other tables do not.

>>> from skein.rewrite.testing import run_rule
>>> run_rule(map_columns, "SELECT plays.user_id, u.user_id FROM analytics.plays JOIN analytics.users u "
...          "ON u.user_id = plays.user_id", {"user_id": "account_id"})
'SELECT plays.account_id AS user_id, u.user_id FROM analytics.plays JOIN analytics.users u ON u.user_id = plays.account_id'
>>> run_rule(map_columns, "SELECT SUM(ms_played) / 2 AS s FROM analytics.plays",
...          {"ms_played": "duration_s * 1000"})
'SELECT SUM(duration_s * 1000) / 2 AS s FROM analytics.plays'
>>> run_rule(map_columns, "SELECT ms_played + 1 AS s FROM analytics.plays",
...          {"ms_played": "duration_s * 1000"})
'SELECT (duration_s * 1000) + 1 AS s FROM analytics.plays'
"""

from __future__ import annotations

from sqlglot import exp

from skein.rewrite.edits import Edit
from skein.rewrite.references import ColumnRef, SourceRefs
from skein.rewrite.render import is_atomic, mapped_expression, style_of
from skein.rewrite.rules.context import Escalate, RuleContext


STANDALONE_PARENTS = (exp.Alias, exp.Paren, exp.Func, exp.Ordered, exp.Group, exp.Distinct,
                      exp.Tuple)


def map_columns(ctx: RuleContext, refs: SourceRefs) -> list[Edit]:
    edits = []
    for ref in refs.columns:
        edit = _map_one(ctx, ref, refs)
        if edit is not None:
            edits.append(edit)
    return edits


def _map_one(ctx: RuleContext, ref: ColumnRef, refs: SourceRefs) -> Edit | None:
    request = ctx.request
    mapped = request.mapping_for(ref.column)
    start, end = ctx.span(ref.node)
    if mapped is None:
        raise Escalate(f"line {ctx.line(start)}: uses {ref.column}, which the campaign drops "
                       "(no replacement expression)")
    if mapped.strip().lower() == ref.column:
        return _drop_schema_qualifier(ctx, ref)
    qualifier = _qualifier(ctx, ref, refs)
    style = style_of(ctx.written(ref.node.this), ctx.dialect)
    text = mapped_expression(mapped, request.columns_dialect, qualifier, style)
    parent = ref.node.parent
    # Where the reference is a whole item of a list or argument, no parentheses are needed.
    standalone = ref.bare_projection or isinstance(parent, STANDALONE_PARENTS)
    if not standalone and not is_atomic(mapped, request.columns_dialect):
        text = f"({text})"
    why = f"{ref.column} is {mapped} in {request.target}"
    if ref.bare_projection:
        text = f"{text} AS {ctx.written(ref.node.this)}"
        why += "; the output keeps its name"
    return Edit(start, end, text, why)


def _drop_schema_qualifier(ctx: RuleContext, ref: ColumnRef) -> Edit | None:
    """``analytics.plays.device`` names the source's schema: once the table moves, the column
    is qualified by the table name alone (``retarget_tables`` keeps it as the alias)."""
    parts = [ref.node.args.get(k) for k in ("catalog", "db")]
    starts = [p.meta["start"] for p in parts if p is not None and "start" in p.meta]
    table = ref.node.args.get("table")
    if not starts or table is None or "start" not in table.meta:
        return None
    return Edit(min(starts), table.meta["start"], "",
                f"{ctx.request.source} is now {ctx.request.target}: qualify by the table name")


def _qualifier(ctx: RuleContext, ref: ColumnRef, refs: SourceRefs) -> str | None:
    table = ref.node.args.get("table")
    if table is not None:
        return ctx.written(table)
    if not ref.needs_qualifier:
        return None
    for table_ref in refs.tables:
        name = table_ref.alias or table_ref.node.name
        if name.lower() == ref.source_alias:
            node = table_ref.node.args.get("alias")
            return ctx.written(node.this) if table_ref.alias and node is not None and \
                "start" in node.this.meta else ctx.written(table_ref.node.this)
    return ref.source_alias
