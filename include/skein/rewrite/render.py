"""Write new SQL fragments in the consumer's own style (dialect, case, quoting).

>>> style = Style(dialect="snowflake", upper=True)
>>> style.identifier("account_id")
'ACCOUNT_ID'
>>> mapped_expression("CAST(duration_s * 1000 AS BIGINT)", "duckdb", "p", Style("duckdb"))
'CAST(p.duration_s * 1000 AS BIGINT)'
>>> mapped_expression("duration_s * 1000", "duckdb", None, Style("duckdb"))
'duration_s * 1000'
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

ATOMIC = (exp.Column, exp.Literal, exp.Func, exp.Paren, exp.Identifier, exp.Null, exp.Boolean)


@dataclass(frozen=True)
class Style:
    dialect: str
    upper: bool = False  # the consumer writes identifiers in upper case (Snowflake habit)
    quoted: bool = False  # the replaced identifier was quoted

    def identifier(self, name: str) -> str:
        return _identifier(name.upper() if self.upper else name, self.quoted, self.dialect)


@functools.lru_cache(maxsize=8192)
def _identifier(name: str, quoted: bool, dialect: str) -> str:
    return exp.to_identifier(name, quoted=quoted or None).sql(dialect=dialect)


def style_of(text: str, dialect: str) -> Style:
    """The style of an identifier as written: ``"User_Id"`` is quoted, ``USER_ID`` upper."""
    quoted = text[:1] in ('"', "`", "[")
    bare = text.strip('"`[]')
    return Style(dialect=dialect, upper=bare.isupper() and not quoted, quoted=quoted)


@functools.lru_cache(maxsize=4096)
def mapped_expression(expression: str, read: str, qualifier: str | None, style: Style) -> str:
    """The campaign's expression for one reference, qualified and styled for the consumer.

    The campaign's own text is kept (qualifiers and case are spliced in at the column
    tokens): regenerating it would respell types and functions (VARCHAR as TEXT).
    """
    text = expression.strip()
    if read != style.dialect:
        text = sqlglot.transpile(text, read=read, write=style.dialect)[0]
    if qualifier is None and not style.upper:
        return text
    tree = sqlglot.parse_one(text, read=style.dialect)
    spans = sorted((c.this.meta["start"], c.this.meta["end"] + 1, c.name)
                   for c in tree.find_all(exp.Column)
                   if isinstance(c.this, exp.Identifier) and "start" in c.this.meta and not c.table)
    for start, end, name in reversed(spans):
        written = text[start:end]
        if style.upper and not written.startswith(('"', "`", "[")):
            written = written.upper()
        text = text[:start] + (f"{qualifier}." if qualifier else "") + written + text[end:]
    return text


def written_identifier(text: str) -> exp.Identifier:
    """An identifier as the consumer wrote it (quoted or not).

    >>> written_identifier('"P"').sql(dialect="postgres"), written_identifier("p").sql()
    ('"P"', 'p')
    """
    quoted = text[:1] in ('"', "`", "[")
    return exp.to_identifier(text.strip('"`[]'), quoted=quoted or None)


@functools.lru_cache(maxsize=4096)
def is_atomic(expression: str, read: str) -> bool:
    """Needs no parentheses wherever a column could stand.

    >>> is_atomic("CAST(x AS INT)", "duckdb"), is_atomic("x * 1000", "duckdb")
    (True, False)
    """
    return isinstance(sqlglot.parse_one(expression, read=read), ATOMIC)


@functools.lru_cache(maxsize=4096)
def is_plain_column(expression: str | None, read: str) -> str | None:
    """The column name when the expression is a bare column (a rename), else None."""
    if expression is None:
        return None
    tree = sqlglot.parse_one(expression, read=read)
    return tree.name.lower() if isinstance(tree, exp.Column) and not tree.table else None
