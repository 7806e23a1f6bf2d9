"""Rule agent fixtures (tests/fixtures/rewrite/<dialect>.sql): exact text out, and for
DuckDB-runnable cases, the original on old data equals the rewrite on migrated data."""

from __future__ import annotations

import math
import re
from pathlib import Path

import duckdb
import pytest
import sqlglot

from skein.agents.base import Escalation, Patch, RewriteRequest
from skein.agents.rule import rewrite
from skein.agents.scope_check import check_scope

FIXTURES = Path(__file__).parent / "fixtures" / "rewrite"
PLAYS = {"play_id": "BIGINT", "user_id": "BIGINT", "track_id": "BIGINT", "played_at": "TIMESTAMP",
         "ms_played": "BIGINT", "country": "VARCHAR", "device": "VARCHAR", "legacy_flag": "BOOLEAN"}
SCHEMAS = {
    "analytics.plays": PLAYS,
    "analytics_v2.plays": {"play_id": "BIGINT", "account_id": "BIGINT", "track_id": "BIGINT",
                           "played_at": "TIMESTAMP", "duration_s": "DECIMAL(12,3)",
                           "country_code": "country_code", "device": "VARCHAR"},
    "analytics.users": {"user_id": "BIGINT", "country": "VARCHAR", "plan": "VARCHAR"},
    "analytics.tracks": {"track_id": "BIGINT", "title": "VARCHAR", "duration_ms": "BIGINT"},
    "staging.plays": {"play_id": "BIGINT", "user_id": "BIGINT"},
}
COLUMNS = {"user_id": "account_id", "ms_played": "CAST(duration_s * 1000 AS BIGINT)",
           "country": "CAST(country_code AS VARCHAR)", "legacy_flag": None}

DATA = """
CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2; CREATE SCHEMA staging; CREATE SCHEMA marts;
CREATE TABLE analytics.plays AS
SELECT i AS play_id, i % 17 AS user_id, i % 23 AS track_id,
       TIMESTAMP '2024-01-01' + INTERVAL (i * 7) HOUR AS played_at, (i * 7919) % 300000 AS ms_played,
       ['SE', 'DE', 'GB', 'IN'][1 + i % 4] AS country, ['tv', 'mobile', 'web'][1 + i % 3] AS device,
       i % 5 = 0 AS legacy_flag
FROM range(1, 400) t(i);
CREATE TABLE analytics.users AS SELECT i AS user_id, ['SE', 'DE', 'GB'][1 + i % 3] AS country,
       ['free', 'premium'][1 + i % 2] AS plan FROM range(0, 17) t(i);
CREATE TABLE analytics.tracks AS SELECT i AS track_id, 'track ' || i AS title, 1000 * i AS duration_ms
FROM range(0, 23) t(i);
CREATE TABLE staging.plays AS SELECT play_id, user_id FROM analytics.plays WHERE play_id % 2 = 0;
CREATE TYPE country_code AS ENUM ('SE', 'DE', 'GB', 'IN');
CREATE TABLE analytics_v2.plays AS
SELECT play_id, user_id AS account_id, track_id, played_at,
       CAST(ms_played AS DECIMAL(12,3)) / 1000 AS duration_s, CAST(country AS country_code) AS country_code,
       device
FROM analytics.plays;
"""


def request(sql: str, dialect: str) -> RewriteRequest:
    return RewriteRequest(consumer_id="fixture.sql", text=sql, dialect=dialect, source="analytics.plays",
                          target="analytics_v2.plays", columns=COLUMNS, schemas=SCHEMAS)


def load_cases():
    for path in sorted(FIXTURES.glob("*.sql")):
        dialect = path.stem
        for chunk in re.split(r"^(?=-- title:)", path.read_text(), flags=re.M)[1:]:
            title = chunk.splitlines()[0][len("-- title:"):].strip()
            body = chunk.split("\n", 1)[1]
            if "\n-- escalate:" in "\n" + body:
                sql, reason = re.split(r"^-- escalate:", body, flags=re.M)
                yield pytest.param(dialect, sql.strip() + "\n", None, reason.strip(), id=f"{dialect}: {title}")
            else:
                sql, expected = re.split(r"^-- expect:\n", body, flags=re.M)
                yield pytest.param(dialect, sql.strip() + "\n", expected.strip() + "\n", None,
                                   id=f"{dialect}: {title}")


CASES = list(load_cases())


@pytest.mark.parametrize("dialect, sql, expected, reason", CASES)
def test_fixture_text(dialect, sql, expected, reason):
    result = rewrite(request(sql, dialect))
    if reason is not None:
        assert isinstance(result, Escalation), result
        assert reason in result.reason
        return
    assert isinstance(result, Patch), result.reason
    assert result.text == expected
    assert check_scope(request(sql, dialect), result.text).ok


@pytest.fixture(scope="module")
def warehouse():
    con = duckdb.connect()
    con.execute(DATA)
    yield con
    con.close()


def rows(con, sql: str):
    statement = sqlglot.parse_one(sql, read="duckdb")
    if isinstance(statement, sqlglot.exp.Create):
        con.execute(sql)
        name = statement.this.sql(dialect="duckdb")
        return con.sql(f"SELECT * FROM {name}").fetchall()
    return con.sql(sql).fetchall()


def normalized(values):
    def key(row):
        return tuple((v is None, str(v)) for v in row)
    return sorted(values, key=key)


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def duckdb_sql(sql: str, dialect: str) -> str:
    return sql if dialect == "duckdb" else ";\n".join(sqlglot.transpile(sql, read=dialect, write="duckdb"))


@pytest.mark.parametrize("dialect, sql, expected, reason",
                         [c for c in CASES if c.values[3] is None])
def test_fixture_parity_on_duckdb(warehouse, dialect, sql, expected, reason):
    """The rewrite on migrated data returns the rows the original returns on the old data."""
    con = warehouse.cursor()
    con.execute("BEGIN")
    try:
        old = rows(con, duckdb_sql(sql, dialect))
        con.execute("ALTER TABLE analytics.plays RENAME TO plays_gone")  # a missed reference fails
        new = rows(con, duckdb_sql(expected, dialect))
    finally:
        con.execute("ROLLBACK")
    old, new = normalized(old), normalized(new)
    assert len(old) == len(new) and old
    for a, b in zip(old, new):
        assert len(a) == len(b) and all(same(x, y) for x, y in zip(a, b)), (a, b)
