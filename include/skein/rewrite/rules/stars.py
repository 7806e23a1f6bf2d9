"""Rule: a ``*`` over the source must still produce the old column list.

The star becomes an explicit list of the old columns, each written with its campaign
expression and old name; other tables' columns are listed as they were. Inside a CTE or
derived table, dropped columns are left out (nothing outside sees them unless it names
them, and then ``map_columns`` escalates).

>>> from skein.rewrite.testing import run_rule
>>> run_rule(expand_stars, "SELECT * FROM analytics.plays", {"user_id": "account_id"})
'SELECT play_id, account_id AS user_id, ms_played, legacy_flag FROM analytics.plays'
"""

from __future__ import annotations

from skein.rewrite.edits import Edit
from sqlglot import exp

from skein.rewrite.references import SourceRefs, StarRef, rows_ignore_projections, star_excluded
from skein.rewrite.render import Style, mapped_expression
from skein.rewrite.rules.context import Escalate, RuleContext


def expand_stars(ctx: RuleContext, refs: SourceRefs) -> list[Edit]:
    edits = []
    for star in refs.stars:
        if not _changes(ctx, star):
            continue
        start, end = ctx.span(star.node)
        if star_excluded(star.node.this if isinstance(star.node, exp.Column) else star.node):
            # The EXCEPT/EXCLUDE list goes with the star, with its closing parenthesis if any.
            rest = ctx.text[end:]
            if rest.lstrip().startswith(")"):
                end += len(rest) - len(rest.lstrip()) + 1
        edits.append(Edit(start, end, _expansion(ctx, star, refs),
                          f"{ctx.request.source} columns change: list the old columns explicitly"))
    return edits


def _changes(ctx: RuleContext, star: StarRef) -> bool:
    for _, column, is_source in star.expansion:
        if is_source:
            mapped = ctx.request.mapping_for(column)
            if mapped is None or mapped.strip().lower() != column:
                return True
    return False


def _expansion(ctx: RuleContext, star: StarRef, refs: SourceRefs) -> str:
    request = ctx.request
    upper = any(t.node.name.isupper() for t in refs.tables)
    style = Style(dialect=ctx.dialect, upper=upper)
    explicit_qualifier = star.node.args.get("table") if hasattr(star.node, "args") else None
    items = []
    for alias, column, is_source in star.expansion:
        qualifier = alias if (star.qualify_all or explicit_qualifier is not None) else None
        if qualifier is not None and explicit_qualifier is not None:
            qualifier = ctx.written(explicit_qualifier)
        name = style.identifier(column)
        if not is_source:
            items.append(f"{qualifier}.{name}" if qualifier else name)
            continue
        mapped = request.mapping_for(column)
        if mapped is None:
            if star.internal and rows_ignore_projections(star.node.parent_select):
                continue
            start, _ = ctx.span(star.node)
            raise Escalate(f"line {ctx.line(start)}: `*` outputs {column}, which the campaign drops")
        text = mapped_expression(mapped, request.columns_dialect, qualifier, style)
        items.append(text if mapped.strip().lower() == column else f"{text} AS {name}")
    return ", ".join(items)
