"""The parity check sets rows apart (by position, else by bucket) before comparing them: it
must find exactly what comparing the whole tables finds, with duplicates, NULLs and floats."""

from __future__ import annotations

import duckdb
import pytest

from skein.simulation import parity
from skein.simulation.parity import compare_tables

# 3000 rows: duplicates (k repeats every 1000 rows in `dup`), NULLs in every column, floats.
OLD = """
CREATE TABLE old AS SELECT range AS k, range % 1000 AS dup,
       CASE WHEN range % 7 = 0 THEN NULL ELSE range % 13 END AS g,
       CASE WHEN range % 11 = 0 THEN NULL ELSE 'c' || (range % 5) END AS s,
       CASE WHEN range % 17 = 0 THEN NULL ELSE range * 0.37::DOUBLE END AS f
FROM range(3000)"""

# Each variant of `new`: some rows changed, some gone, some added, some duplicated.
CHANGES = {
    "values": "SELECT k, dup, CASE WHEN k % 97 = 0 THEN coalesce(g, 0) + 1 ELSE g END AS g, s, f FROM old",
    "nulls": "SELECT k, dup, g, CASE WHEN k % 89 = 0 THEN NULL ELSE s END AS s, f FROM old",
    "floats": "SELECT k, dup, g, s, CASE WHEN k % 83 = 0 THEN f * (1 + 1e-6) ELSE f * (1 + 1e-12) END AS f FROM old",
    "rows": "SELECT * FROM old WHERE k % 101 != 5 UNION ALL SELECT k + 10000, dup, g, s, f FROM old WHERE k < 7",
    "duplicates": "SELECT * FROM old UNION ALL SELECT * FROM old WHERE k % 331 = 0",
    "all-null row": "SELECT * FROM old UNION ALL SELECT NULL, NULL, NULL, NULL, NULL",
}


def _whole(con, new: str, key: list[str] | None, rel_tol: float = 1e-9) -> parity.ParityResult:
    """The comparison over the whole tables, nothing set apart: the reference. Without a
    key, plain ``EXCEPT ALL`` both ways over the rounded rows (the definition)."""
    described = parity.describe(con, "old")
    columns = [c for c, _ in described]
    floats = {c for c, t in described if t.startswith(parity.FLOAT_TYPES)}
    counts = tuple(con.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("old", new))
    if key:
        scratch = parity._Scratch(con)
        try:
            return parity._by_key(scratch, "old", new, columns, key, floats, rel_tol, 10**6, counts)
        finally:
            scratch.drop()
    rounded = parity._rounded(columns, floats, rel_tol)
    left, right = f"SELECT {rounded} FROM old", f"SELECT {rounded} FROM {new}"
    samples = []
    for side, query in (("old", f"{left} EXCEPT ALL {right}"), ("new", f"{right} EXCEPT ALL {left}")):
        rel = con.sql(query)
        samples += [{"side": side, **dict(zip(rel.columns, r))} for r in rel.fetchall()]
    only_old = sum(r["side"] == "old" for r in samples)
    return parity.ParityResult("fail" if samples else "pass", "", *counts, only_old, len(samples) - only_old,
                               [], samples)


def _found(result: parity.ParityResult) -> tuple:
    rows = sorted(map(repr, (sorted(r.items()) for r in result.samples)))
    return result.status, result.only_old, result.only_new, result.differing_columns, rows


@pytest.fixture(scope="module")
def con():
    connection = duckdb.connect()
    connection.execute(OLD)
    for name, query in CHANGES.items():
        table = name.replace("-", "_").replace(" ", "_")
        connection.execute(f"CREATE TABLE {table} AS {query}")  # same row order as old
        connection.execute(f"CREATE TABLE {table}_shuffled AS SELECT * FROM ({query}) ORDER BY hash(k, s)")
        connection.execute(f"CREATE VIEW {table}_view AS {query}")  # no rowid: no positional pass
    yield connection
    connection.close()


@pytest.mark.parametrize("key", [["k", "dup"], None], ids=["key", "no-key"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_set_apart_rows_give_the_whole_comparison(con, change, key):
    table = change.replace("-", "_").replace(" ", "_")
    expected = _found(_whole(con, table, key))
    assert expected[0] == "fail"
    # Repeated keys: the whole-table join pairs every copy with every copy and then falls
    # back to multisets; set apart, the extra copies may stand alone (listed by key) or
    # not (listed as multiset rows). Same counts, samples shaped differently.
    compared = 4 if key and change == "duplicates" else 5
    for variant in (table, f"{table}_shuffled", f"{table}_view"):
        found = _found(compare_tables(con, "old", variant, key=key, samples=10**6))
        assert found[:compared] == expected[:compared], variant


def test_each_way_of_setting_apart_is_taken(con, monkeypatch):
    """Same order: by position; another order or a view: by bucket; most buckets
    mismatching: the whole tables."""
    taken = []
    for name in ("_by_position", "_by_bucket"):
        original = getattr(parity, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            found = _original(*args, **kwargs)
            taken.append((_name, found is not None and "__skein_" in "".join(found)))
            return found

        monkeypatch.setattr(parity, name, spy)
    compare_tables(con, "old", "values", key=["k"])
    assert taken == [("_by_position", True)]
    taken.clear()
    compare_tables(con, "old", "values_shuffled", key=["k"])
    assert taken == [("_by_position", False), ("_by_bucket", True)]
    taken.clear()
    con.execute("CREATE TEMP TABLE everything AS SELECT k, dup, g, s, f + 1 AS f FROM old ORDER BY hash(k)")
    with_f = con.sql("SELECT count(f) FROM old").fetchall()[0][0]  # a NULL f stays NULL
    assert compare_tables(con, "old", "everything", key=["k"]).only_old == with_f
    assert taken == [("_by_position", False), ("_by_bucket", False)]


def test_float_noise_passes_whichever_way_rows_are_set_apart(con):
    con.execute("CREATE TEMP TABLE noisy AS SELECT k, dup, g, s, f * (1 + 1e-12) AS f FROM old")
    con.execute("CREATE TEMP TABLE noisy_shuffled AS SELECT * FROM noisy ORDER BY hash(k)")
    for table in ("noisy", "noisy_shuffled"):
        assert compare_tables(con, "old", table, key=["k"]).status == "pass"
        assert compare_tables(con, "old", table).status == "pass"
        assert compare_tables(con, "old", table, key=["k"], rel_tol=1e-13).differing_columns == ["f"]


def test_a_repeated_key_hiding_an_extra_row_is_counted():
    """Pairs of a repeated key all compare equal, yet one side has a row more often: the
    rows are then compared as multisets (a join on the key alone would pass them)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE old AS SELECT * FROM (VALUES (1, 'a'), (1, 'a'), (2, 'b')) t(k, v)")
    con.execute("CREATE TABLE new AS SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (2, 'b')) t(k, v)")
    con.execute("CREATE VIEW old_view AS SELECT * FROM old; CREATE VIEW new_view AS SELECT * FROM new")
    # By position, the equal rows at positions 0 and 2 go; the rest pairs by key.
    by_position = compare_tables(con, "old", "new", key=["k"])
    assert (by_position.status, by_position.only_old, by_position.only_new) == ("fail", 1, 1)
    assert [(r["old.k"], r["new.k"]) for r in by_position.samples] == [(1, None), (None, 2)]
    # By bucket (views have no position), every row stays: key 1 and key 2 pair 2 x 1 and
    # 1 x 2 times, all equal; counted as multisets instead.
    by_bucket = compare_tables(con, "old_view", "new_view", key=["k"])
    assert (by_bucket.status, by_bucket.only_old, by_bucket.only_new) == ("fail", 1, 1)
    assert [(r["side"], r["k"]) for r in by_bucket.samples] == [("old", 1), ("new", 2)]


def test_empty_and_one_sided_tables():
    con = duckdb.connect()
    con.execute("CREATE TABLE old AS SELECT range AS k FROM range(5)")
    con.execute("CREATE TABLE none AS SELECT * FROM old WHERE false")
    for key in (["k"], None):
        gone = compare_tables(con, "old", "none", key=key)
        assert (gone.status, gone.only_old, gone.only_new) == ("fail", 5, 0)
        added = compare_tables(con, "none", "old", key=key)
        assert (added.status, added.only_old, added.only_new) == ("fail", 0, 5)
        assert compare_tables(con, "none", "none", key=key).status == "pass"


def test_scratch_tables_are_dropped(con):
    compare_tables(con, "old", "values_shuffled", key=["k"])
    compare_tables(con, "old", "duplicates")
    left = con.sql("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '__skein_%'").fetchall()
    assert left == []
