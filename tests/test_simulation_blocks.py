"""Simulation building blocks: the consumer sandbox and the parity comparison."""

from __future__ import annotations

import pyarrow as pa
import pytest

from skein.simulation.parity import compare_tables
from skein.simulation.sandbox import Sandbox, SandboxError

PLAYS = pa.table({"play_id": list(range(1, 101)), "user_id": [i % 7 for i in range(1, 101)],
                  "ms": [float(i) * 1000.5 for i in range(1, 101)]})


@pytest.fixture
def box():
    with Sandbox(timeout_s=2) as sandbox:
        sandbox.load("analytics.plays", PLAYS)
        sandbox.lock()
        yield sandbox


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM 'https://example.invalid/data.parquet'",
])
def test_sandbox_blocks_file_and_network_access(box, sql):
    with pytest.raises(SandboxError, match="Permission|disabled"):
        box.run(sql, "out")


def test_sandbox_refuses_statements_that_are_not_queries(box):
    with pytest.raises(SandboxError, match="only queries run in the sandbox, not COPY"):
        box.run("COPY analytics.plays TO '/tmp/x.csv'", "out")
    with pytest.raises(SandboxError, match="not DROP"):
        box.run("DROP TABLE analytics.plays", "out")
    box.run("CREATE VIEW v AS SELECT COUNT(*) AS n FROM analytics.plays", "out")  # runs its query
    assert box.connection.sql("SELECT n FROM out").fetchall() == [(100,)]
    import duckdb

    with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
        box.connection.execute("SET enable_external_access = true")


def test_sandbox_stops_a_long_query(box):
    with pytest.raises(SandboxError, match="time limit"):
        box.run("SELECT count(*) FROM range(100000000000) a, range(1000) b", "out")


def test_sandbox_runs_other_dialects_transpiled(box):
    box.run("SELECT user_id, IFF(ms > 50000, 1, 0) AS big FROM analytics.plays WHERE play_id = 60",
            "out", dialect="snowflake")
    assert box.connection.sql("SELECT * FROM out").fetchall() == [(4, 1)]


@pytest.fixture
def con():
    import duckdb

    connection = duckdb.connect()
    connection.execute("CREATE TABLE old AS SELECT range AS k, range % 5 AS g, range * 0.1::DOUBLE AS f "
                       "FROM range(1000)")
    yield connection
    connection.close()


def test_identical_outputs_pass_by_fingerprint(con):
    con.execute("CREATE TABLE new AS SELECT * FROM old ORDER BY k DESC")
    result = compare_tables(con, "old", "new")
    assert (result.status, result.reason) == ("pass", "identical (fingerprint)")


def test_wrong_join_key_is_caught_with_the_differing_rows(con):
    con.execute("CREATE TABLE new AS SELECT k, CASE WHEN k % 100 = 0 THEN g + 1 ELSE g END AS g, f FROM old")
    result = compare_tables(con, "old", "new", key=["k"])
    assert result.status == "fail"
    assert result.differing_columns == ["g"]
    assert result.only_old == 10 and result.only_new == 10
    assert {row["old.k"] for row in result.samples} <= {i * 100 for i in range(10)}
    assert all(row["new.g"] == row["old.g"] + 1 for row in result.samples)
    assert compare_tables(con, "old", "new").status == "fail"  # without a key: EXCEPT ALL


def test_float_noise_within_tolerance_passes_outside_fails(con):
    con.execute("CREATE TABLE noisy AS SELECT k, g, f * (1 + 1e-12) AS f FROM old")
    con.execute("CREATE TABLE off AS SELECT k, g, f * (1 + 1e-6) AS f FROM old")
    assert compare_tables(con, "old", "noisy", key=["k"]).status == "pass"
    assert compare_tables(con, "old", "noisy").status == "pass"
    off = compare_tables(con, "old", "off", key=["k"])
    assert off.status == "fail" and off.differing_columns == ["f"]
    assert compare_tables(con, "old", "off", key=["k"], rel_tol=1e-5).status == "pass"


def test_duplicates_are_counted(con):
    con.execute("CREATE TABLE new AS SELECT * FROM old UNION ALL SELECT * FROM old WHERE k < 3")
    result = compare_tables(con, "old", "new")
    assert result.status == "fail" and (result.only_old, result.only_new) == (0, 3)
    assert (result.old_rows, result.new_rows) == (1000, 1003)


def test_columns_and_types_are_checked_first(con):
    con.execute("CREATE TABLE renamed AS SELECT k, g AS grp, f FROM old")
    con.execute("CREATE TABLE retyped AS SELECT k, CAST(g AS INTEGER) AS g, f FROM old")
    assert compare_tables(con, "old", "renamed").reason.startswith("columns differ")
    assert compare_tables(con, "old", "retyped").reason == "types differ: g: BIGINT -> INTEGER"


def test_nulls_equal_nulls(con):
    con.execute("CREATE TABLE a AS SELECT k, CASE WHEN k % 2 = 0 THEN NULL ELSE f END AS f FROM old")
    con.execute("CREATE TABLE b AS SELECT k, CASE WHEN k % 2 = 0 THEN NULL ELSE f * (1 + 1e-12) END AS f FROM old")
    assert compare_tables(con, "a", "b", key=["k"]).status == "pass"
    assert compare_tables(con, "a", "b").status == "pass"


def test_sampling_keeps_join_partners_together():
    """Rows of two datasets sampled on the same key values survive together."""
    import duckdb

    from skein.simulation.worlds import sample_query

    con = duckdb.connect()
    con.execute("CREATE SCHEMA a; CREATE TABLE a.plays AS SELECT range AS play_id, range % 500 AS user_id "
                "FROM range(20000); CREATE TABLE a.users AS SELECT range AS user_id FROM range(500)")
    # One bucket count for the run (from the largest dataset), a different size limit each.
    plays = con.sql(sample_query("a.plays", 20000, 2000, ["user_id"], 10)).fetchall()
    users = {r[0] for r in con.sql(sample_query("a.users", 500, 50, ["user_id"], 10)).fetchall()}
    assert 0 < len(plays) < 20000
    assert {r[1] for r in plays} == users  # every sampled play still finds its user
    assert sample_query("a.plays", 10, 2000, ["user_id"], 10) == "SELECT * FROM a.plays"


def test_sandbox_memory_limit_stops_a_greedy_query():
    with Sandbox(timeout_s=30, memory_limit="32MB") as sandbox:
        sandbox.lock()
        with pytest.raises(SandboxError, match="(?i)memory"):
            sandbox.run("SELECT list(range) AS l FROM range(20000000) GROUP BY range % 3", "out")


def test_sandbox_reports_sql_it_cannot_transpile_faithfully(box):
    with pytest.raises(SandboxError, match="cannot run bigquery SQL on DuckDB faithfully"):
        box.run("SELECT user_id, ARRAY_AGG(play_id ORDER BY ms DESC LIMIT 3) AS top FROM analytics.plays "
                "GROUP BY user_id", "out", dialect="bigquery")
