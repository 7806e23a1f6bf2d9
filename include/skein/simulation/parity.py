"""Old output vs new output, value by value (see shared notes: parity and validation).

Order of checks, cheapest first: column names and order, exact types as DuckDB reports
them, row counts and a fingerprint (``sum(hash(row))``: duplicate-aware, unlike xor);
equal fingerprints end it, at the cost of one scan of each table.

Otherwise the rows that may differ are set apart first, then compared: a key join when a
key is known (it also names the columns that differ), else a duplicate-aware multiset
difference (``EXCEPT ALL``'s answer, counted with one ``GROUP BY``). Setting apart works
by taking out rows present unchanged on both sides, which changes neither comparison's
answer, with or without tolerance; it only spares the join. Two ways, cheapest first:

- by position, when both outputs come in the same row order (the same ``ORDER BY``, or
  the same plan over the same data): one positional scan keeps the rows of positions
  whose row hashes differ;
- by bucket otherwise: rows are spread over buckets by key (by row hash without a key),
  each bucket gets a count and fingerprint per side in one grouped scan, and the rows of
  mismatching buckets are kept.

Floating point columns compare within a relative tolerance; NULL equals NULL. A hash
cannot carry a tolerance: float noise only makes positions or buckets mismatch, and their
rows are then compared within tolerance (with a key) or rounded to the significant digits
``rel_tol`` keeps (without one).

Hand-written on DuckDB SQL: reladiff diffs across databases by checksumming segments,
which is slower within one engine and has no per-column tolerance.

>>> import duckdb
>>> con = duckdb.connect()
>>> _ = con.execute("CREATE TABLE old AS SELECT * FROM (VALUES (1, 1.0), (2, 2.0)) t(k, v)")
>>> _ = con.execute("CREATE TABLE new AS SELECT * FROM (VALUES (1, 1.0), (2, 2.5)) t(k, v)")
>>> r = compare_tables(con, "old", "new", key=["k"])
>>> r.status, r.only_old, r.only_new, r.differing_columns
('fail', 1, 1, ['v'])
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field

import duckdb
from sqlglot import exp

FLOAT_TYPES = ("FLOAT", "DOUBLE", "REAL")
PROBE_ROWS = 2048  # leading positions compared to tell whether both outputs share an order
# Bucket sizing trades the grouped pass (dearer with more buckets: past 65536 groups
# DuckDB's grouping slows sharply) against the rows left to compare. A key join of the
# rows kept costs little per row, so with a key buckets are larger; counting rows as
# multisets costs more per row than the pass, so without one they are smaller.
ROWS_PER_BUCKET, ROWS_PER_KEYED_BUCKET = 64, 512
MIN_BUCKETS, MAX_BUCKETS = 1024, 65536


@dataclass(frozen=True)
class ParityResult:
    status: str  # pass | fail | error
    reason: str = ""
    old_rows: int = 0
    new_rows: int = 0
    only_old: int = 0  # rows (with multiplicity) the new output lacks
    only_new: int = 0
    differing_columns: list[str] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)  # first differing rows, old and new side by side


def _q(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")


def _table(name: str) -> str:
    return exp.to_table(name).sql(dialect="duckdb")


def describe(con, table: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in _rows(con, f"DESCRIBE SELECT * FROM {_table(table)}")[1]]


def _rows(con, query: str) -> tuple[list[str], list[tuple]]:
    """Column names and rows of a query, fully fetched (a pending result would block the
    connection); ``execute`` costs less per query than a relation here."""
    cursor = con.execute(query)
    rows = cursor.fetchall()
    return [d[0] for d in cursor.description], rows


def compare_tables(con, old: str, new: str, *, key: list[str] | None = None,
                   rel_tol: float = 1e-9, samples: int = 10) -> ParityResult:
    """Compare two tables of one DuckDB connection; ``old``/``new`` are table names.

    ``key``: columns identifying a row on each side. Should a repeated key hide a
    difference (its pairs all compare equal though the fingerprints differ), the rows are
    counted as multisets instead.
    """
    old_cols, new_cols = describe(con, old), describe(con, new)
    if [c for c, _ in old_cols] != [c for c, _ in new_cols]:
        return ParityResult("fail", f"columns differ: {[c for c, _ in old_cols]} -> "
                                    f"{[c for c, _ in new_cols]}")
    if old_cols != new_cols:
        changed = [f"{c}: {a} -> {b}" for (c, a), (_, b) in zip(old_cols, new_cols) if a != b]
        return ParityResult("fail", "types differ: " + "; ".join(changed))
    old, new = _table(old), _table(new)
    old_n, old_fp, new_n, new_fp = _fingerprints(con, old, new)
    if old_n == new_n and old_fp == new_fp:
        return ParityResult("pass", "identical (fingerprint)", old_n, new_n)
    floats = {c for c, t in old_cols if t.upper().startswith(FLOAT_TYPES)}
    columns = [c for c, _ in old_cols]
    counts = (old_n, new_n)
    scratch = _Scratch(con)
    try:
        old_rel, new_rel = _by_position(scratch, old, new, columns, counts) or \
            _by_bucket(scratch, old, new, max(counts), key)
        if key:
            return _by_key(scratch, old_rel, new_rel, columns, key, floats, rel_tol, samples, counts)
        rounded = _rounded(columns, floats, rel_tol)
        return _by_multiset(scratch, f"(SELECT {rounded} FROM {old_rel})",
                            f"(SELECT {rounded} FROM {new_rel})", columns, samples, counts)
    finally:
        scratch.drop()


def _fingerprints(con, old: str, new: str) -> tuple:
    """Row count and order-independent sum of row hashes of each relation (SQL), one query."""
    def one(relation: str) -> str:
        return f"(SELECT count(*), sum(hash(t)::HUGEINT) FROM {relation} t)"

    return _rows(con, f"SELECT * FROM {one(old)}, {one(new)}")[1][0]


class _Scratch:
    """Temporary tables of one comparison, uniquely named, dropped at the end."""

    def __init__(self, con):
        self.con, self.tables = con, []

    def create(self, query: str) -> tuple[str, int]:
        """A temporary table of the query's rows: its name and how many rows it holds."""
        name = _q(f"__skein_{uuid.uuid4().hex[:12]}")
        self.tables.append(name)
        return name, _rows(self.con, f"CREATE TEMP TABLE {name} AS {query}")[1][0][0]

    def drop(self) -> None:
        for name in self.tables:
            self.con.execute(f"DROP TABLE IF EXISTS {name}")


def _by_position(scratch: _Scratch, old: str, new: str, columns: list[str],
                 counts: tuple[int, int]) -> tuple[str, str] | None:
    """The rows of positions whose row hashes differ, as SQL relations of each side; or
    ``None`` when the outputs do not come in one order (more than half of the leading
    positions differ, or of all) or are not base tables (no ``rowid``, no position).

    A row at an equal position equals its partner: the pair can go. A POSITIONAL JOIN
    hashes both tables' rows like the fingerprint does, but on one thread; it joins the
    tables themselves (over subqueries adding a column it ran at half the speed).
    ``rowid`` marks a side's presence past the shorter end (an all-NULL row is a row).
    """
    con = scratch.con
    leading = f"WHERE rowid < {PROBE_ROWS}"  # a rowid range reads only the first vectors
    try:
        _, [(probed, differing)] = _rows(
            con, f"SELECT count(*), count(*) FILTER (WHERE hash(o) IS DISTINCT FROM hash(n)) "
                 f"FROM (SELECT * FROM {old} {leading}) o POSITIONAL JOIN (SELECT * FROM {new} {leading}) n")
    except duckdb.BinderException:  # a view or other relation without rowid
        return None
    # Outputs in different orders differ at nearly every position; float noise (a sum
    # recomputed differs in its last bits in about a third of rows) should not count.
    if differing > probed // 2:
        return None
    limit = max(counts) // 2  # past that, the rows kept would cost as much as all rows
    shown = [f"{side}.{_q(c)} AS {_q(side + '.' + c)}" for side in ("o", "n") for c in columns]
    table, kept = scratch.create(
        f"SELECT o.rowid IS NOT NULL AS {_q('o.present')}, n.rowid IS NOT NULL AS {_q('n.present')}, "
        + ", ".join(shown) + f" FROM {old} o POSITIONAL JOIN {new} n "
        "WHERE o.rowid IS NULL OR n.rowid IS NULL OR hash(o) IS DISTINCT FROM hash(n) "
        f"LIMIT {limit + 1}")
    if kept > limit:
        return None  # not one order after all; the bucket pass does better

    def side(name: str) -> str:
        picked = ", ".join(f"{_q(name + '.' + c)} AS {_q(c)}" for c in columns)
        return f"(SELECT {picked} FROM {table} WHERE {_q(name + '.present')})"

    return side("o"), side("n")


def bucket_count(rows: int, per_bucket: int = ROWS_PER_BUCKET) -> int:
    """Buckets to spread ``rows`` rows over: about ``per_bucket`` rows each, a power of
    two within bounds.

    >>> bucket_count(10), bucket_count(1_000_000), bucket_count(10_000_000)
    (1024, 16384, 65536)
    >>> bucket_count(1_000_000, ROWS_PER_KEYED_BUCKET), bucket_count(10_000_000, ROWS_PER_KEYED_BUCKET)
    (2048, 32768)
    """
    wanted = max(1, rows // per_bucket)
    return min(MAX_BUCKETS, max(MIN_BUCKETS, 1 << (wanted - 1).bit_length()))


def _by_bucket(scratch: _Scratch, old: str, new: str, rows: int,
               key: list[str] | None = None) -> tuple[str, str]:
    """The rows of buckets whose count or fingerprint (sum of row hashes) differ between
    the sides, as SQL relations. Buckets are by key when one is known (a changed row then
    taints one bucket, not two), else by row hash.

    A bucket with the same fingerprint on both sides holds the same rows (up to a 64-bit
    hash collision, as for the whole-table fingerprint): they pair with identical rows and
    can go. When most buckets differ, filtering would spare the comparison little: all
    rows go on.
    """
    buckets = bucket_count(rows, ROWS_PER_KEYED_BUCKET if key else ROWS_PER_BUCKET)
    by = f"hash({', '.join(f't.{_q(k)}' for k in key)})" if key else "hash(t)"
    per_bucket = (f"SELECT b % {buckets} AS b, count(*) AS n, sum(h::HUGEINT) AS s "
                  f"FROM (SELECT {by} AS b, hash(t) AS h FROM {{}} t) GROUP BY 1")
    bad, mismatching = scratch.create(
        f"SELECT b FROM ({per_bucket.format(old)}) o FULL JOIN ({per_bucket.format(new)}) n USING (b) "
        "WHERE o.n IS DISTINCT FROM n.n OR o.s IS DISTINCT FROM n.s")
    if mismatching > buckets // 2:
        return old, new
    pick = f"WHERE {by} % {buckets} IN (SELECT b FROM {bad})"
    return f"(SELECT * FROM {old} t {pick})", f"(SELECT * FROM {new} t {pick})"


def _equal(column: str, floats: set[str], rel_tol: float, a: str = "o", b: str = "n") -> str:
    left, right = f"{a}.{_q(column)}", f"{b}.{_q(column)}"
    if column in floats:
        return (f"(({left} IS NULL AND {right} IS NULL) OR abs({left} - {right}) <= "
                f"{rel_tol!r} * greatest(abs({left}), abs({right})) OR {left} = {right})")
    return f"({left} IS NOT DISTINCT FROM {right})"


def _by_key(scratch: _Scratch, old, new, columns, key, floats, rel_tol, samples, counts) -> ParityResult:
    """One FULL JOIN on the key of the rows set apart, the differing pairs kept; one query
    returns their totals and the first pairs (totals by plain aggregates: DuckDB's
    filtered window counts are quadratic)."""
    con = scratch.con
    present = _q("__skein_present")  # a side's row in the outer join (key values may be NULL)
    on = " AND ".join(f"o.{_q(k)} IS NOT DISTINCT FROM n.{_q(k)}" for k in key)
    values = [c for c in columns if c not in key]
    extra, missing = _q("__skein_only_old"), _q("__skein_only_new")
    flags = [f"NOT {_equal(c, floats, rel_tol)} AS {_q('differs.' + c)}" for c in values]
    shown = [f"{_q(side + '.' + c)}" for c in columns for side in ("old", "new")]
    pairs = (f"SELECT n.{present} IS NULL AS {extra}, o.{present} IS NULL AS {missing}, "
             + ", ".join(flags + [f"{side[0]}.{_q(c)} AS {_q(side + '.' + c)}"
                                  for c in columns for side in ("old", "new")])
             + f" FROM (SELECT *, true AS {present} FROM {old}) o "
             f"FULL JOIN (SELECT *, true AS {present} FROM {new}) n ON {on} "
             f"WHERE n.{present} IS NULL OR o.{present} IS NULL"
             + "".join(f" OR NOT {_equal(c, floats, rel_tol)}" for c in values))
    paired = f"NOT ({extra} OR {missing})"
    tallies = [f"count(*) FILTER (WHERE {extra})", f"count(*) FILTER (WHERE {missing})",
               f"count(*) FILTER (WHERE {paired})"]
    tallies += [f"count(*) FILTER (WHERE {paired} AND {_q('differs.' + c)})" for c in values]
    names, rows = _rows(con, f"WITH d AS MATERIALIZED ({pairs}), t AS (SELECT {', '.join(tallies)} FROM d) "
                             f"SELECT * FROM t LEFT JOIN (SELECT {', '.join(shown)} FROM d LIMIT {int(samples)}) "
                             "ON true")
    only_old, only_new, changed, *per_column = rows[0][:3 + len(values)]
    if not (only_old or only_new or changed):
        if _duplicate_key(con, old, key) or _duplicate_key(con, new, key):
            # Every pair of a repeated key compared equal, though the fingerprints differ:
            # the pairing hid a row one side has more often. Count rows as multisets.
            rounded = _rounded(columns, floats, rel_tol)
            return _by_multiset(scratch, f"(SELECT {rounded} FROM {old})", f"(SELECT {rounded} FROM {new})",
                                columns, samples, counts)
        return ParityResult("pass", "equal by key within tolerance", *counts)
    differing = [c for c, n in zip(values, per_column) if n]
    sample = [dict(zip(names[3 + len(values):], r[3 + len(values):])) for r in rows][:int(samples)]
    return ParityResult("fail", f"{changed} row(s) differ, {only_old} only in old, {only_new} only in new",
                        *counts, only_old + changed, only_new + changed, differing, sample)


def _duplicate_key(con, relation: str, key: list[str]) -> bool:
    """Whether a key value occurs twice in ``relation`` (NULLs equal, as in the join)."""
    keys = ", ".join(_q(k) for k in key)
    return bool(_rows(con, f"SELECT 1 FROM {relation} GROUP BY {keys} HAVING count(*) > 1 LIMIT 1")[1])


def _rounded(columns, floats, rel_tol: float) -> str:
    """Floats rounded to the digits ``rel_tol`` keeps, so whole rows can be compared.

    >>> _rounded(["k", "v"], {"v"}, 1e-3)  # doctest: +ELLIPSIS
    '"k", CASE WHEN "v" = 0 ... ELSE round("v", 2 - CAST(floor(log10(abs("v"))) AS INTEGER)) END AS "v"'
    """
    digits = max(1, round(-math.log10(rel_tol)))
    items = []
    for c in columns:
        if c in floats:
            items.append(f"CASE WHEN {_q(c)} = 0 OR {_q(c)} IS NULL OR isinf({_q(c)}) OR isnan({_q(c)}) "
                         f"THEN {_q(c)} ELSE round({_q(c)}, {digits - 1} - "
                         f"CAST(floor(log10(abs({_q(c)}))) AS INTEGER)) END AS {_q(c)}")
        else:
            items.append(_q(c))
    return ", ".join(items)


def _by_multiset(scratch: _Scratch, old, new, columns, samples, counts) -> ParityResult:
    """Rows counted on each side by value (one GROUP BY over both): the rows a side has more
    often than the other are what ``EXCEPT ALL`` would return, duplicates included. One
    query returns the totals and the first surplus rows of each side, one per surplus copy
    as ``EXCEPT ALL`` lists them."""
    names = ", ".join(_q(c) for c in columns)
    side, n_old, n_new, copy = (_q(f"__skein_{n}") for n in ("side", "old", "new", "copy"))
    grouped = (f"SELECT {names}, count(*) FILTER (WHERE {side} = 0) AS {n_old}, "
               f"count(*) FILTER (WHERE {side} = 1) AS {n_new} FROM (SELECT {names}, 0 AS {side} FROM {old} "
               f"UNION ALL SELECT {names}, 1 FROM {new}) GROUP BY ALL HAVING {n_old} != {n_new}")
    first = (f"SELECT {names}, {n_old} > {n_new} AS {side} FROM ((SELECT * FROM g WHERE {n_old} > {n_new} "
             f"LIMIT {int(samples)}) UNION ALL (SELECT * FROM g WHERE {n_new} > {n_old} LIMIT {int(samples)})), "
             f"range(least(abs({n_old} - {n_new}), {int(samples)})) c({copy})")
    _, rows = _rows(scratch.con,
                    f"WITH g AS MATERIALIZED ({grouped}), t AS (SELECT sum(greatest({n_old} - {n_new}, 0)), "
                    f"sum(greatest({n_new} - {n_old}, 0)) FROM g) SELECT * FROM t LEFT JOIN ({first}) ON true")
    only_old, only_new = (int(n or 0) for n in rows[0][:2])
    if not (only_old or only_new):
        return ParityResult("pass", "equal as multisets within tolerance", *counts)
    sample = []
    for label, is_old in (("old", True), ("new", False)):
        sample += [{"side": label, **dict(zip(columns, r[2:-1]))} for r in rows if r[-1] is is_old][:samples]
    return ParityResult("fail", f"{only_old} row(s) only in old, {only_new} only in new",
                        *counts, only_old, only_new, [], sample)
