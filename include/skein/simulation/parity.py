"""Old output vs new output, value by value (see shared notes: parity and validation).

Order of checks, cheapest first: column names and order, exact types as DuckDB reports
them, row counts and a fingerprint (``sum(hash(row))``: duplicate-aware, unlike xor);
equal fingerprints end it. Otherwise: a key join when a key is known (it also names the
columns that differ), else ``EXCEPT ALL`` both ways (duplicates counted). Floating point
columns compare within a relative tolerance; NULL equals NULL.

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
from dataclasses import dataclass, field

from sqlglot import exp

FLOAT_TYPES = ("FLOAT", "DOUBLE", "REAL")


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
    return [(row[0], row[1]) for row in con.sql(f"DESCRIBE SELECT * FROM {_table(table)}").fetchall()]


def compare_tables(con, old: str, new: str, *, key: list[str] | None = None,
                   rel_tol: float = 1e-9, samples: int = 10) -> ParityResult:
    """Compare two tables of one DuckDB connection; ``old``/``new`` are table names."""
    old_cols, new_cols = describe(con, old), describe(con, new)
    if [c for c, _ in old_cols] != [c for c, _ in new_cols]:
        return ParityResult("fail", f"columns differ: {[c for c, _ in old_cols]} -> "
                                    f"{[c for c, _ in new_cols]}")
    if old_cols != new_cols:
        changed = [f"{c}: {a} -> {b}" for (c, a), (_, b) in zip(old_cols, new_cols) if a != b]
        return ParityResult("fail", "types differ: " + "; ".join(changed))
    (old_n, old_fp), = con.sql(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {_table(old)} t").fetchall()
    (new_n, new_fp), = con.sql(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {_table(new)} t").fetchall()
    if old_n == new_n and old_fp == new_fp:
        return ParityResult("pass", "identical (fingerprint)", old_n, new_n)
    floats = {c for c, t in old_cols if t.upper().startswith(FLOAT_TYPES)}
    columns = [c for c, _ in old_cols]
    if key:
        return _by_key(con, old, new, columns, key, floats, rel_tol, samples, old_n, new_n)
    return _by_except(con, old, new, columns, floats, rel_tol, samples, old_n, new_n)


def _equal(column: str, floats: set[str], rel_tol: float, a: str = "o", b: str = "n") -> str:
    left, right = f"{a}.{_q(column)}", f"{b}.{_q(column)}"
    if column in floats:
        return (f"(({left} IS NULL AND {right} IS NULL) OR abs({left} - {right}) <= "
                f"{rel_tol!r} * greatest(abs({left}), abs({right})) OR {left} = {right})")
    return f"({left} IS NOT DISTINCT FROM {right})"


def _by_key(con, old, new, columns, key, floats, rel_tol, samples, old_n, new_n) -> ParityResult:
    """One FULL JOIN on the key; only the differing rows are kept (usually few)."""
    on = " AND ".join(f"o.{_q(k)} IS NOT DISTINCT FROM n.{_q(k)}" for k in key)
    values = [c for c in columns if c not in key]
    missing = f"(o.{_q(key[0])} IS NULL AND n.{_q(key[0])} IS NOT NULL)"
    extra = f"(n.{_q(key[0])} IS NULL AND o.{_q(key[0])} IS NOT NULL)"
    flags = [f"NOT {_equal(c, floats, rel_tol)} AS {_q('differs.' + c)}" for c in values]
    shown = [f"o.{_q(c)} AS {_q('old.' + c)}, n.{_q(c)} AS {_q('new.' + c)}" for c in columns]
    table = _q(f"__skein_diff_{id(con)}")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {extra} AS _only_old, {missing} AS _only_new, "
        + ", ".join(flags + shown)
        + f" FROM {_table(old)} o FULL JOIN {_table(new)} n ON {on} WHERE {extra} OR {missing}"
        + "".join(f" OR NOT {_equal(c, floats, rel_tol)}" for c in values))
    try:
        counts = ", ".join(["count(*) FILTER (WHERE _only_old)", "count(*) FILTER (WHERE _only_new)",
                            "count(*) FILTER (WHERE NOT _only_old AND NOT _only_new)"]
                           + [f"count(*) FILTER (WHERE NOT _only_old AND NOT _only_new AND "
                              f"{_q('differs.' + c)})" for c in values])
        row = con.sql(f"SELECT {counts} FROM {table}").fetchall()[0]
        only_old, only_new, changed = row[0], row[1], row[2]
        if not (only_old or only_new or changed):
            return ParityResult("pass", "equal by key within tolerance", old_n, new_n)
        differing = [c for c, n in zip(values, row[3:]) if n]
        picked = ", ".join(f"{_q('old.' + c)}, {_q('new.' + c)}" for c in columns)
        rel = con.sql(f"SELECT {picked} FROM {table} LIMIT {int(samples)}")
        sample = [dict(zip(rel.columns, r)) for r in rel.fetchall()]
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}")
    return ParityResult("fail", f"{changed} row(s) differ, {only_old} only in old, {only_new} only in new",
                        old_n, new_n, only_old + changed, only_new + changed, differing, sample)


def _rounded(columns, floats, rel_tol: float) -> str:
    """Floats rounded to the digits ``rel_tol`` keeps, so EXCEPT ALL can compare them."""
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


def _by_except(con, old, new, columns, floats, rel_tol, samples, old_n, new_n) -> ParityResult:
    projection = _rounded(columns, floats, rel_tol)
    left = f"SELECT {projection} FROM {_table(old)}"
    right = f"SELECT {projection} FROM {_table(new)}"
    only_old = con.sql(f"SELECT count(*) FROM ({left} EXCEPT ALL {right})").fetchall()[0][0]
    only_new = con.sql(f"SELECT count(*) FROM ({right} EXCEPT ALL {left})").fetchall()[0][0]
    if not (only_old or only_new):
        return ParityResult("pass", "equal as multisets within tolerance", old_n, new_n)
    sample = []
    for side, query in (("old", f"{left} EXCEPT ALL {right}"), ("new", f"{right} EXCEPT ALL {left}")):
        rel = con.sql(f"SELECT * FROM ({query}) LIMIT {int(samples)}")
        sample += [{"side": side, **dict(zip(rel.columns, r))} for r in rel.fetchall()]
    return ParityResult("fail", f"{only_old} row(s) only in old, {only_new} only in new",
                        old_n, new_n, only_old, only_new, [], sample)
