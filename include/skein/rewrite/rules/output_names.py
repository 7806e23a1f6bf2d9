"""Rule: an unnamed output expression keeps the name the engine gave it.

``SELECT sum(l_quantity)`` is a column named ``sum(l_quantity)`` in DuckDB; once the
column inside is rewritten, the engine would name it after the new text. The old name
is pinned with an alias. DuckDB derives the name from its own rendering of the
expression, which ``json_serialize_sql``/``json_deserialize_sql`` reproduce exactly.
Other engines name such columns differently (BigQuery ``f0_``, Postgres ``sum``) and are
left as they are.

>>> from skein.rewrite.testing import run_rule
>>> run_rule(keep_output_names, "SELECT SUM(ms_played) FROM analytics.plays",
...          {"ms_played": "CAST(duration_s * 1000 AS BIGINT)"})
'SELECT SUM(ms_played) AS "sum(ms_played)" FROM analytics.plays'
"""

from __future__ import annotations

import functools
import threading

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from skein.rewrite.edits import Edit
from skein.rewrite.references import SourceRefs
from skein.rewrite.rules.context import Escalate, RuleContext

ENDS_PROJECTION = {TokenType.COMMA, TokenType.FROM, TokenType.WHERE, TokenType.GROUP_BY,
                   TokenType.ORDER_BY, TokenType.LIMIT, TokenType.HAVING, TokenType.QUALIFY,
                   TokenType.WINDOW, TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT,
                   TokenType.SEMICOLON, TokenType.INTO}


def keep_output_names(ctx: RuleContext, refs: SourceRefs) -> list[Edit]:
    if ctx.dialect != "duckdb" or not (refs.columns or refs.tables):
        return []
    # What the rules rewrite: mapped columns, columns losing their schema qualifier
    # (columns.py), and the source's table references (a scalar subquery's name has them).
    changing = [r.node for r in refs.columns
                if (ctx.request.mapping_for(r.column) or "").strip().lower() != r.column
                or r.node.args.get("db") is not None] + [t.node for t in refs.tables]
    edits = []
    for projection in _root_projections(changing[0]) if changing else []:
        if isinstance(projection, (exp.Alias, exp.Column, exp.Star)):
            continue
        offsets = [i.meta["start"] for node in changing if _contains(projection, node)
                   for i in node.find_all(exp.Identifier) if "start" in i.meta]
        if not offsets:
            continue
        span = projection_span(ctx.text, min(offsets), ctx.tokens)
        if span is None:
            continue
        end = span[1]
        if any(s < end and span[0] < e for s, e in ctx.jinja_spans.values()):
            raise Escalate(f"line {ctx.line(end)}: the name of this output column comes from dbt "
                           "Jinja, which renders differently once rewritten; alias it to rewrite it")
        # As written: sqlglot's rendering may differ (`x IS NOT NULL` -> `NOT x IS NULL`,
        # `a != 1` -> `a <> 1`), and DuckDB names the column after what it parsed.
        name = duckdb_column_name(ctx.text[span[0]:end])
        if name is None:
            raise Escalate(f"line {ctx.line(end)}: DuckDB cannot name this output column (it "
                           "does not render it, e.g. nested too deeply); alias it to rewrite it")
        edits.append(Edit(end, end, f" AS {exp.to_identifier(name, quoted=True).sql('duckdb')}",
                          "the output column keeps the name DuckDB gave it"))
    return edits


def _contains(ancestor: exp.Expression, node: exp.Expression) -> bool:
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False


def _root_projections(node: exp.Expression) -> list[exp.Expression]:
    root = node.root()
    query = root.expression if isinstance(root, (exp.Create, exp.Insert)) else root
    return list(query.expressions) if isinstance(query, exp.Select) else []


STARTS_PROJECTION = {TokenType.SELECT, TokenType.DISTINCT, TokenType.ALL, TokenType.COMMA}


def projection_span(text: str, offset: int, tokens=None) -> tuple[int, int] | None:
    """Start and end offsets of the projection containing ``offset`` (in the outermost
    SELECT), as written: from the token after the SELECT, DISTINCT (ON (...)) or comma
    before it to the end of its last token.

    >>> text = "SELECT DISTINCT a, b IS NOT NULL -- c\\nFROM t"
    >>> start, end = projection_span(text, text.index("b"))
    >>> text[start:end]
    'b IS NOT NULL'
    >>> text = "SELECT a IS DISTINCT FROM b, c FROM t"
    >>> start, end = projection_span(text, text.index("b"))
    >>> text[start:end]
    'a IS DISTINCT FROM b'
    """
    if tokens is None:
        try:
            tokens = sqlglot.tokenize(text, read="duckdb")
        except sqlglot.errors.TokenError:
            return None
    depth, start, pending, distinct_on, previous = 0, None, False, False, None
    previous_end = None
    started = False
    for token in tokens:
        if not started and token.start >= offset:
            started = True
            start = token.start if pending or start is None else start
        if not started:
            if pending:
                start, pending = token.start, False
            if depth == 0 and (token.token_type in (TokenType.SELECT, TokenType.COMMA) or
                               token.token_type in STARTS_PROJECTION and previous == TokenType.SELECT):
                pending = True  # DISTINCT or ALL right after SELECT (not `IS DISTINCT FROM`)
            elif depth == 0 and token.token_type == TokenType.ON and previous == TokenType.DISTINCT:
                distinct_on, start = True, None
        if started and depth == 0 and token.token_type in ENDS_PROJECTION and not \
                (token.token_type == TokenType.FROM and previous == TokenType.DISTINCT):
            return (start, previous_end) if previous_end is not None else None
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
            if started and depth < 0:
                return (start, previous_end) if previous_end is not None else None
            if not started and depth == 0 and distinct_on:
                distinct_on, pending = False, True
        if started:
            previous_end = token.end + 1
        previous = token.token_type  # `x IS DISTINCT FROM y`: that FROM is not the clause
    return (start, previous_end) if started and previous_end is not None else None


def written_projection(text: str, tokens, projection: exp.Expression) -> str:
    """``projection`` (of the outermost SELECT of ``text``) as written, when its text can be
    found; else sqlglot's DuckDB rendering of it."""
    offsets = [i.meta["start"] for i in projection.find_all(exp.Identifier) if "start" in i.meta]
    span = projection_span(text, min(offsets), tokens) if offsets else None
    return text[span[0]:span[1]] if span else projection.sql(dialect="duckdb")


@functools.lru_cache(maxsize=4096)
def duckdb_column_name(expression: str) -> str | None:
    """The name DuckDB gives an unaliased output column; None when DuckDB cannot render it
    (its parser and serializer stop at a nesting depth: 256 levels, 1,000 expressions).

    >>> duckdb_column_name("SUM( x )"), duckdb_column_name("a + 1")
    ('sum(x)', '(a + 1)')
    >>> duckdb_column_name(" + ".join(["x"] * 300)) is None
    True
    """
    try:
        with _ENGINE_LOCK:  # one in-memory connection: opening one costs more than the query
            sql = _engine().execute("SELECT json_deserialize_sql(json_serialize_sql(?))",
                                    [f"SELECT {expression}"]).fetchone()[0]
    except duckdb.Error:
        return None
    return sql[len("SELECT "):]


_ENGINE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _engine():
    import duckdb

    return duckdb.connect()
