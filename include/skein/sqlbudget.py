"""The parse budget: how much work one consumer's SQL may cost before Skein escalates it.

sqlglot has no budget of its own, and what costs is rarely the parse (linear: 1 MiB in
about 2 s and 200 MB) but what follows it. Resolving columns (``qualify``, scopes) copies
the sources of every CTE into the next, so a chain of n CTEs costs n² memory (254 KB took
3 GB, 828 KB more than 7 GB), and walks the parent chains of left-deep operator trees, so
``a + a + ...`` and long ``AND`` or ``UNION ALL`` chains cost depth² time (64 KB took 25 s,
960 KB more than 400 s). sqlglot is compiled (mypyc): a SIGINT waits until such a call
returns. So every consumer is measured before those steps, each measure cheap and linear:

1. before tokenizing: ``MAX_CHARS`` characters;
2. on the token stream, before parsing: ``MAX_TOKENS`` tokens;
3. on the parsed trees, before any resolution: ``MAX_NODES`` syntax nodes, ``MAX_DEPTH``
   levels of nesting (a chain of n operators nests n deep), ``MAX_CTES`` CTEs, and
   ``MAX_DEPTH_SUM``, the depths of all nodes added up: what walking up from every node
   costs, so thirty 990-deep chains (each under ``MAX_DEPTH``; 37 s) are refused too;
4. a wall-clock ``Deadline`` (``MAX_SECONDS``), checked between the phases of an analysis.

Past any limit the consumer is escalated with ``TooComplex``'s reason, e.g. "too complex:
245,766 tokens, limit 100,000". The limits are far above what real queries need (the TPC-H
and TPC-DS queries, the rule fixtures and the demo fleet: at most 1,394 tokens, 1,249
nodes, 29 levels, 6 CTEs, depths adding up to 9,640) and keep the worst input under them
to seconds and a few hundred MB (docs/guarantees.md, tests/test_untrusted_sql.py).

>>> tokens, trees = parse("SELECT a + b FROM t", "duckdb")
>>> len(tokens), trees[0].sql()
(6, 'SELECT a + b FROM t')
>>> parse("SELECT " + " + ".join(["a"] * 1500) + " FROM t", "duckdb")
Traceback (most recent call last):
skein.sqlbudget.TooComplex: too complex: nested 1,502 levels deep, limit 1,000
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError

from skein.errors import SkeinError

# The size of the largest consumer file Skein reads (skein.catalog.MAX_CONSUMER_BYTES).
MAX_CHARS = 1 << 20
# Tokens: bounds the parse itself (100,000 tokens parse in ~1 s and ~80 MB).
MAX_TOKENS = 100_000
# Syntax nodes of all statements: bounds every walk over the trees.
MAX_NODES = 100_000
# Nesting depth, parentheses and operator chains alike: resolution costs depth² (1,000: ~1 s).
MAX_DEPTH = 1_000
# CTEs of all statements: resolution costs their count² in memory (500: ~25 MB).
MAX_CTES = 500
# The depths of all syntax nodes added up: resolution's time is about 1 s per million.
MAX_DEPTH_SUM = 3_000_000
# Wall-clock time of one consumer's analysis, checked between phases.
MAX_SECONDS = 60.0


class TooComplex(SkeinError, ParseError):
    """A consumer's SQL is over the budget. A ``ParseError`` too, so every place that
    handles SQL that does not parse also handles this, and never runs the expensive steps."""


def check_text(text: str) -> None:
    """Refuse text longer than ``MAX_CHARS`` before tokenizing it.

    >>> check_text("x" * (MAX_CHARS + 1))
    Traceback (most recent call last):
    skein.sqlbudget.TooComplex: too complex: 1,048,577 characters, limit 1,048,576
    """
    if len(text) > MAX_CHARS:
        raise TooComplex(f"too complex: {len(text):,} characters, limit {MAX_CHARS:,}")


def check_tokens(tokens: Sequence) -> None:
    """Refuse more than ``MAX_TOKENS`` tokens before parsing them.

    >>> check_tokens([None] * (MAX_TOKENS + 1))
    Traceback (most recent call last):
    skein.sqlbudget.TooComplex: too complex: 100,001 tokens, limit 100,000
    """
    if len(tokens) > MAX_TOKENS:
        raise TooComplex(f"too complex: {len(tokens):,} tokens, limit {MAX_TOKENS:,}")


def check_trees(trees: Sequence[exp.Expression | None]) -> None:
    """Refuse trees over ``MAX_NODES`` nodes, ``MAX_DEPTH`` levels, ``MAX_CTES`` CTEs or
    ``MAX_DEPTH_SUM``. The walk is iterative (no recursion) and stops past ``MAX_NODES``.

    >>> import sqlglot
    >>> check_trees([sqlglot.parse_one("WITH " + ", ".join(f"c{i} AS (SELECT 1)" for i in range(501))
    ...                                + " SELECT 1")])
    Traceback (most recent call last):
    skein.sqlbudget.TooComplex: too complex: 501 CTEs, limit 500
    >>> chains = ", ".join(" + ".join(["a"] * 900) for _ in range(3))
    >>> check_trees([sqlglot.parse_one(f"SELECT {chains} FROM t")])
    Traceback (most recent call last):
    skein.sqlbudget.TooComplex: too complex: the depths of its 8,101 syntax nodes add up to 3,662,551, limit 3,000,000
    """
    nodes = ctes = deepest = depth_sum = 0
    stack = [(tree, 1) for tree in trees if tree is not None]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise TooComplex(f"too complex: more than {MAX_NODES:,} syntax nodes, limit {MAX_NODES:,}")
        deepest, depth_sum = max(deepest, depth), depth_sum + depth
        ctes += isinstance(node, exp.CTE)
        # The children, as ``iter_expressions`` yields them, at a third of its cost: this
        # runs on every parse (the edit check parses many small texts).
        for value in node.args.values():
            if isinstance(value, exp.Expression):
                stack.append((value, depth + 1))
            elif type(value) is list:
                stack.extend((item, depth + 1) for item in value if isinstance(item, exp.Expression))
    if deepest > MAX_DEPTH:
        raise TooComplex(f"too complex: nested {deepest:,} levels deep, limit {MAX_DEPTH:,}")
    if ctes > MAX_CTES:
        raise TooComplex(f"too complex: {ctes:,} CTEs, limit {MAX_CTES:,}")
    if depth_sum > MAX_DEPTH_SUM:
        raise TooComplex(f"too complex: the depths of its {nodes:,} syntax nodes add up to "
                         f"{depth_sum:,}, limit {MAX_DEPTH_SUM:,}")


@functools.lru_cache(maxsize=64)
def _dialect(name: str) -> Dialect:
    return Dialect.get_or_raise(name)


def parse(text: str, dialect: str, tokenizer=None, parser=None) -> tuple[list, list]:
    """``(tokens, trees)`` of ``text``, measured before each step; raises ``TooComplex`` or
    sqlglot's own errors. ``tokenizer``, ``parser``: the dialect's, to reuse (default: new)."""
    check_text(text)
    instance = _dialect(dialect)
    tokens = (tokenizer or instance.tokenizer()).tokenize(bom_as_space(text))
    check_tokens(tokens)
    trees = (parser or instance.parser()).parse(tokens, text)
    check_trees(trees)
    return tokens, trees


def bom_as_space(text: str) -> str:
    """``text`` as sqlglot is given it: a leading byte-order mark (U+FEFF, which editors on
    Windows write and sqlglot's tokenizer refuses) read as a space, one character for one, so
    every offset into the parse is an offset into the original, whose BOM a patch keeps.

    >>> bom_as_space("\ufeffSELECT 1"), bom_as_space("SELECT 1")
    (' SELECT 1', 'SELECT 1')
    """
    return " " + text[1:] if text.startswith("\ufeff") else text


class Deadline:
    """``MAX_SECONDS`` of wall-clock time from its creation; ``check`` between phases.

    >>> Deadline().check("parse")
    >>> Deadline(seconds=0).check("column resolution")
    Traceback (most recent call last):
    skein.sqlbudget.TooComplex: too complex: still analysing after 0 s (at column resolution), limit 0 s
    """

    def __init__(self, seconds: float | None = None):
        self.seconds = MAX_SECONDS if seconds is None else seconds
        self.ends = time.monotonic() + self.seconds

    def check(self, phase: str) -> None:
        if time.monotonic() >= self.ends:
            raise TooComplex(f"too complex: still analysing after {self.seconds:g} s (at {phase}), "
                             f"limit {self.seconds:g} s")
