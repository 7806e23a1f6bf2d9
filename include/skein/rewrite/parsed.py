"""A consumer's SQL parsed once: statements, tokens and comments, shared by the rules and
the scope check instead of each parsing (and tokenizing, for comments) again.

>>> parsed = parse_sql("SELECT 1 -- one\\n; SELECT 2", "duckdb")
>>> len(parsed.statements), dict(parsed.comments)
(2, {'one': 1})
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.tokens import Token

from skein.rewrite.resolve import Resolution
from skein.sqlbudget import parse


@dataclass
class ParsedSQL:
    text: str
    dialect: str
    statements: list[exp.Expression]
    tokens: list[Token]
    comments: Counter  # stripped comment text -> count
    # statement index -> resolution of its query, filled by whoever resolved it first
    resolutions: dict[int, Resolution] = field(default_factory=dict)


@functools.lru_cache(maxsize=64)
def dialect_of(name: str) -> Dialect:
    """One instance per dialect: ``Dialect.get_or_raise(name)`` builds a new one each call."""
    return Dialect.get_or_raise(name)


_local = threading.local()


def tokenize_and_parse(text: str, dialect: str):
    """``(tokens, statements)``, within the parse budget (``skein.sqlbudget``: raises
    ``TooComplex``, a ``ParseError``). A tokenizer and a parser per dialect and thread,
    reused: building them costs a third of parsing a short text (the edit check parses many)."""
    engines = _local.__dict__.setdefault("engines", {})
    engine = engines.get(dialect)
    if engine is None:
        instance = dialect_of(dialect)
        engine = engines[dialect] = (instance.tokenizer(), instance.parser())
    try:
        return parse(text, dialect, *engine)
    except (SqlglotError, RecursionError):
        raise
    except Exception as exc:  # noqa: BLE001 - sqlglot's bare errors on odd input (`-> 1`: TypeError)
        raise ParseError(f"{type(exc).__name__}: {exc}") from None


def parse_sql(text: str, dialect: str) -> ParsedSQL:
    """Tokenize and parse ``text``; raises sqlglot's errors."""
    tokens, parsed = tokenize_and_parse(text, dialect)
    # Every dialect's comments start with one of these (`#` in MySQL and BigQuery).
    commented = "--" in text or "/*" in text or "#" in text or "//" in text
    comments = Counter(c.strip() for token in tokens if token.comments for c in token.comments) \
        if commented else Counter()
    statements = [s for s in parsed if s is not None]
    return ParsedSQL(text, dialect, statements, tokens, comments)
