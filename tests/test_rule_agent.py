"""Rule agent fixtures (tests/fixtures/rewrite/<dialect>.sql): exact text out, and for
DuckDB-runnable cases, the original on old data equals the rewrite on migrated data."""

from __future__ import annotations

import math
import re
from pathlib import Path

import duckdb
import pytest
import sqlglot

from skein.rewrite.request import Escalation, Patch, RewriteRequest
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
    """The statement for DuckDB: transpiled, catalog parts dropped (Skein ignores them)."""
    if dialect == "duckdb":
        return sql
    statements = []
    for statement in sqlglot.parse(sql, read=dialect):
        for table in statement.find_all(sqlglot.exp.Table):
            table.set("catalog", None)
        statements.append(statement.sql(dialect="duckdb"))
    return ";\n".join(statements)


@pytest.mark.parametrize("dialect, sql, expected, reason",
                         [c for c in CASES if c.values[3] is None])
def test_fixture_parity_on_duckdb(warehouse, dialect, sql, expected, reason):
    """The rewrite on migrated data returns the rows the original returns on the old data."""
    assert_same_rows(warehouse, sql, expected, dialect)


def assert_same_rows(warehouse, old_sql: str, new_sql: str, dialect: str) -> None:
    """The old query on the old data and the new one without the source return the same rows."""
    con = warehouse.cursor()
    con.execute("BEGIN")
    try:
        try:
            old = rows(con, duckdb_sql(old_sql, dialect))
        except duckdb.ParserException as exc:
            pytest.skip(f"the {dialect} original does not run on DuckDB once transpiled: {exc}")
        con.execute("ALTER TABLE analytics.plays RENAME TO plays_gone")  # a missed reference fails
        new = rows(con, duckdb_sql(new_sql, dialect))
    finally:
        con.execute("ROLLBACK")
    old, new = normalized(old), normalized(new)
    assert len(old) == len(new) and old
    for a, b in zip(old, new):
        assert len(a) == len(b) and all(same(x, y) for x, y in zip(a, b)), (a, b)


DBT_MODEL = """\
{{ config(materialized='incremental', unique_key='play_id') }}
-- staging of plays: one row per play
select play_id,
       user_id,
       {{ to_seconds('track_id') }} as track_s,   {# macro on a column that does not change #}
       ms_played
from {{ source('analytics', 'plays') }}
where ms_played >= {{ var('min_ms') }}
{% if is_incremental() %}
  and played_at > (select max(played_at) from {{ this }})
{% endif %}
"""

DBT_EXPECTED = DBT_MODEL.replace("       user_id,", "       account_id AS user_id,").replace(
    "       ms_played\n", "       CAST(duration_s * 1000 AS BIGINT) AS ms_played\n").replace(
    "where ms_played >=", "where CAST(duration_s * 1000 AS BIGINT) >=").replace(
    "{{ source('analytics', 'plays') }}", "{{ source('analytics_v2', 'plays') }}")


def dbt_project(tmp_path, model_text):
    root = tmp_path / "music"
    (root / "models").mkdir(parents=True)
    (root / "macros").mkdir()
    (root / "dbt_project.yml").write_text("name: music\nprofile: music\nvars: {min_ms: 30000}\n")
    (root / "profiles.yml").write_text("music: {target: dev, outputs: {dev: {type: duckdb, schema: dbt}}}\n")
    (root / "models" / "sources.yml").write_text(
        "sources:\n  - name: analytics\n    tables: [{name: plays}]\n"
        "  - name: analytics_v2\n    tables: [{name: plays}]\n")
    (root / "macros" / "s.sql").write_text("{% macro to_seconds(c) %}{{ c }} / 1000.0{% endmacro %}\n")
    model = root / "models" / "stg_plays.sql"
    model.write_text(model_text)
    return root, model


def dbt_request(root, model, text):
    schemas = {**SCHEMAS, "dbt.stg_plays": {"play_id": "BIGINT", "user_id": "BIGINT",
                                            "track_s": "DOUBLE", "ms_played": "BIGINT"}}
    return RewriteRequest(consumer_id="music/models/stg_plays.sql", text=text, dialect="duckdb",
                          source="analytics.plays", target="analytics_v2.plays", columns=COLUMNS,
                          schemas=schemas, dbt_project_root=str(root), consumer_path=str(model),
                          dbt_relations={"source('analytics', 'plays')": "analytics.plays",
                                         "source('analytics_v2', 'plays')": "analytics_v2.plays"})


def test_dbt_model_jinja_stays_byte_identical(tmp_path):
    root, model = dbt_project(tmp_path, DBT_MODEL)
    result = rewrite(dbt_request(root, model, DBT_MODEL))
    assert isinstance(result, Patch), result.reason
    assert result.text == DBT_EXPECTED
    assert [c.line for c in result.changes] == [4, 6, 7, 8]


def test_dbt_without_a_declared_target_source_escalates(tmp_path):
    root, model = dbt_project(tmp_path, DBT_MODEL)
    request = dbt_request(root, model, DBT_MODEL).model_copy(update={"dbt_relations": {}})
    result = rewrite(request)
    assert isinstance(result, Escalation)
    assert "no dbt source or model declares analytics_v2.plays" in result.reason


def test_dbt_reference_inside_a_macro_call_escalates(tmp_path):
    text = DBT_MODEL.replace("to_seconds('track_id')", "to_seconds('ms_played')")
    root, model = dbt_project(tmp_path, text)
    result = rewrite(dbt_request(root, model, text))
    assert isinstance(result, Escalation)
    assert result.reason == ("line 5: a reference to analytics.plays is inside a Jinja expression "
                             "(macro call); the rules do not edit Jinja")


def test_scope_check_rejects_out_of_scope_changes():
    sql = "SELECT user_id, track_id FROM analytics.plays WHERE device = 'tv' -- keep\n"
    req = request(sql, "duckdb")
    good = "SELECT account_id AS user_id, track_id FROM analytics_v2.plays WHERE device = 'tv' -- keep\n"
    assert check_scope(req, good).ok
    bad = {
        "filter changed": good.replace("'tv'", "'web'"),
        "unrelated column swapped": good.replace("track_id", "play_id"),
        "output renamed": good.replace("AS user_id", "AS uid"),
        "still reads the source": sql,
        "comment removed": good.replace(" -- keep", ""),
        "wrong mapping": good.replace("account_id AS user_id", "play_id AS user_id"),
    }
    for what, text in bad.items():
        verdict = check_scope(req, text)
        assert not verdict.ok, what
        assert verdict.problems, what


OTHER_DIALECTS = ("bigquery", "snowflake", "postgres")


@pytest.mark.parametrize("target_dialect", OTHER_DIALECTS)
@pytest.mark.parametrize("dialect, sql, expected, reason",
                         [c for c in CASES if c.values[0] == "duckdb"])
def test_every_duckdb_case_in_other_dialects(warehouse, target_dialect, dialect, sql, expected, reason):
    """Each DuckDB fixture, transpiled to another dialect: same verdict, and the rewrite
    (in that dialect) returns the original's rows on the migrated data."""
    try:
        translated = ";\n".join(sqlglot.transpile(sql, read="duckdb", write=target_dialect,
                                                  unsupported_level=sqlglot.ErrorLevel.RAISE))
    except sqlglot.errors.UnsupportedError as exc:
        pytest.skip(f"sqlglot cannot write this case in {target_dialect}: {exc}")
    result = rewrite(request(translated, target_dialect))
    if reason is not None:
        assert isinstance(result, Escalation)
        return
    assert isinstance(result, Patch), result.reason
    assert check_scope(request(translated, target_dialect), result.text).ok
    assert_same_rows(warehouse, translated, result.text, target_dialect)


def test_crlf_files_keep_their_line_endings(tmp_path):
    """A Windows-edited consumer keeps CRLF: the patch is its bytes with only the references
    changed, so the hash apply checks against is the file's own."""
    from skein.agents.requests import request_for_file
    from skein.agents.rule import rewrite
    from skein.spec import load_campaign

    spec = tmp_path / "c.yaml"
    spec.write_text("campaign: crlf\ntitle: t\nowners: [a]\nwarehouse: duckdb:///w.duckdb\n"
                    "source: analytics.plays\ntarget: analytics_v2.plays\ncolumns: {user_id: account_id}\n")
    consumer = tmp_path / "q.sql"
    consumer.write_bytes(b"-- daily\r\nSELECT user_id,\r\n       ms_played\r\nFROM analytics.plays\r\n")
    schemas = {"analytics.plays": {"user_id": "BIGINT", "ms_played": "BIGINT"},
               "analytics_v2.plays": {"account_id": "BIGINT", "ms_played": "BIGINT"}}
    patch = rewrite(request_for_file(load_campaign(spec), schemas, consumer))
    assert patch.text.encode() == (b"-- daily\r\nSELECT account_id AS user_id,\r\n       ms_played\r\n"
                                   b"FROM analytics_v2.plays\r\n")


@pytest.mark.parametrize("sql", [
    "SELECT " + "(" * 600 + "user_id" + ")" * 600 + " FROM analytics.plays",
    "SELECT " + "CASE WHEN ms_played > 0 THEN " * 600 + "1" + " END" * 600 + " FROM analytics.plays",
], ids=["parentheses", "CASE"])
def test_deep_nesting_escalates_instead_of_raising(sql):
    """Found by tests/test_property_consumer_sql.py: RecursionError escaped the rule agent."""
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Escalation)
    assert result.reason == "nested too deeply for the rules to rewrite"


def test_an_output_duckdb_cannot_name_escalates():
    """Found by tests/test_property_consumer_sql.py: an unaliased projection nested past
    DuckDB's serializer depth (here 200 additions) made keep_output_names raise DuckDB's
    SerializationException (ParserException past 1,000) out of the rule agent."""
    sql = "SELECT " + " + ".join(["ms_played"] * 200) + " FROM analytics.plays"
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Escalation)
    assert result.reason.startswith("line 1: DuckDB cannot name this output column")
    aliased = sql.replace(" FROM", " AS total FROM")
    assert isinstance(rewrite(request(aliased, "duckdb")), Patch)


def test_lateral_subquery_reading_the_outer_source(warehouse):
    """Found by tests/test_property_consumer_sql.py: the scope check's canonical form took
    the LATERAL subquery's view of the outer table for a FROM node and raised
    AttributeError ('NoneType' object has no attribute 'parent') out of the rule agent."""
    sql = ("SELECT p.user_id, x.m FROM analytics.plays p, "
           "LATERAL (SELECT p.ms_played + 1 AS m) x\n")
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Patch), result.reason
    assert "CAST(p.duration_s * 1000 AS BIGINT) + 1 AS m" in result.text
    assert_same_rows(warehouse, sql, result.text, "duckdb")


def test_skein_rewrite_of_a_file_that_is_not_utf8_is_a_user_error(tmp_path, capsys):
    """Found by tests/test_property_consumer_sql.py: `skein rewrite CAMPAIGN FILE` read a
    Latin-1 file and crashed with UnicodeDecodeError (a traceback, exit 1)."""
    import duckdb

    from skein.cli import main

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute(DATA)
    con.close()
    spec = tmp_path / "c.yaml"
    spec.write_text("campaign: latin\ntitle: t\nowners: [a]\nwarehouse: duckdb:///w.duckdb\n"
                    "source: analytics.plays\ntarget: analytics_v2.plays\ncolumns: {user_id: account_id}\n")
    consumer = tmp_path / "q.sql"
    consumer.write_bytes("SELECT user_id\nFROM analytics.plays -- Göteborg\n".encode("latin-1"))
    assert main(["rewrite", str(spec), str(consumer)]) == 2
    assert capsys.readouterr().err == (f"skein: {consumer}:2: not UTF-8 text (byte 0xf6): "
                                       "Skein edits UTF-8 files only\n")


def test_unnamed_outputs_keep_the_name_duckdb_gave_the_written_text(warehouse):
    """Found by tests/test_property_rewrite_semantics.py: the pinned name was DuckDB's name
    for sqlglot's rendering of the projection, not for the text as written:
    `user_id IS NOT NULL` became `... AS "(NOT (user_id IS NULL))"` (the original column is
    named "(user_id IS NOT NULL)"); `!=` and `**` were renamed too. The scope check computed
    the same wrong name, so the patch passed it."""
    sql = "SELECT DISTINCT user_id IS NOT NULL, user_id != 1, ms_played ** 2\nFROM analytics.plays\n"
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Patch), result.reason
    con = warehouse.cursor()
    assert con.sql(result.text).columns == con.sql(sql).columns == [
        "(user_id IS NOT NULL)", "(user_id != 1)", "(ms_played ** 2)"]
    assert_same_rows(warehouse, sql, result.text, "duckdb")


@pytest.mark.parametrize("sql", ["SELECT #2 FROM analytics.plays", "FROM analytics.plays SELECT #1, #3"])
def test_positional_columns_over_the_source_escalate(sql):
    """Found by tests/test_property_rewrite_semantics.py: DuckDB's `#2` reads the second
    column of the FROM clause; the rules left it as it was, so against the target (other
    columns, another order) the patch read another column, under another name, and the
    scope check passed it."""
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Escalation)
    assert "by position, which the target does not keep" in result.reason
    patched = sql.replace("analytics.plays", "analytics_v2.plays")
    verdict = check_scope(request(sql, "duckdb"), patched)
    assert not verdict.ok and "positional column" in verdict.feedback


def test_columns_qualified_with_the_source_schema_follow_the_move(warehouse):
    """Found by tests/test_property_rewrite_semantics.py: in `analytics.plays.device` only
    mapped columns were rewritten; an unmapped one kept the old schema.table qualifier, so
    the patch did not run once the table moved, and the scope check (which resolves by the
    table name alone) passed it."""
    sql = ("SELECT analytics.plays.device, analytics.plays.user_id, count(*) AS n\n"
           "FROM analytics.plays WHERE \"analytics\".\"plays\".\"track_id\" > 3 GROUP BY 1, 2\n")
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Patch), result.reason
    assert result.text == ("SELECT plays.device, plays.account_id AS user_id, count(*) AS n\n"
                           "FROM analytics_v2.plays WHERE \"plays\".\"track_id\" > 3 GROUP BY 1, 2\n")
    assert_same_rows(warehouse, sql, result.text, "duckdb")
    dangling = result.text.replace("plays.device", "analytics.plays.device")
    verdict = check_scope(request(sql, "duckdb"), dangling)
    assert not verdict.ok and "still qualified with analytics.plays" in verdict.feedback


def test_dropping_the_schema_qualifier_keeps_unnamed_output_names(warehouse):
    """Found by tests/test_property_rewrite_semantics.py, after the fix above: dropping the
    schema part of `count(DISTINCT analytics.plays.device)` renamed the unaliased output."""
    sql = ("SELECT analytics.plays.track_id + 1, count(DISTINCT analytics.plays.device)\n"
           "FROM analytics.plays GROUP BY 1\n")
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Patch), result.reason
    con = warehouse.cursor()
    assert con.sql(result.text).columns == con.sql(sql).columns
    assert_same_rows(warehouse, sql, result.text, "duckdb")


def test_is_distinct_from_in_an_unnamed_projection(warehouse):
    """Found by tests/test_property_rewrite_semantics.py: the end of a projection was taken
    at the FROM of `IS DISTINCT FROM`, so its pinned name went in the middle of it (the
    patch did not parse and the rule escalated)."""
    sql = "SELECT user_id IS DISTINCT FROM play_id, device FROM analytics.plays\n"
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Patch), result.reason
    assert result.text == ('SELECT account_id IS DISTINCT FROM play_id AS "(user_id IS DISTINCT FROM '
                           'play_id)", device FROM analytics_v2.plays\n')
    assert warehouse.cursor().sql(result.text).columns == warehouse.cursor().sql(sql).columns
    assert_same_rows(warehouse, sql, result.text, "duckdb")


def test_unnamed_scalar_subquery_over_the_source_keeps_its_name(warehouse):
    """Found by tests/test_property_rewrite_semantics.py: DuckDB names an unaliased scalar
    subquery after its text, table name included; only projections with a changed column
    had their name pinned, so retargeting the table inside renamed the output column."""
    sql = ("SELECT user_id, (SELECT count(*) FROM analytics.plays p WHERE p.device = u.plan)\n"
           "FROM analytics.users u\n")
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Patch), result.reason
    con = warehouse.cursor()
    assert con.sql(result.text).columns == con.sql(sql).columns
    assert_same_rows(warehouse, sql, result.text, "duckdb")


@pytest.mark.parametrize("sql", [
    "FROM analytics.plays JOIN analytics.users USING (user_id)\nSELECT plays.user_id, plan",
    "SELECT plays.user_id, plan FROM (analytics.plays JOIN analytics.users USING (user_id))",
], ids=["FROM-first", "parenthesized"])
def test_using_joins_the_rules_cannot_see_escalate(sql):
    """Found by tests/test_property_rewrite_semantics.py: sqlglot attaches these joins to the
    table, not the SELECT, so USING (user_id) was left as it was while user_id was renamed
    (the patch did not run: user_id no longer exists on the left side), and the scope check
    passed it."""
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Escalation)
    assert "joins inside parentheses or before SELECT" in result.reason
    patched = sql.replace("analytics.plays", "analytics_v2.plays").replace(
        "plays.user_id,", "plays.account_id AS user_id,")
    assert "USING or NATURAL join inside parentheses" in check_scope(request(sql, "duckdb"), patched).feedback


@pytest.mark.parametrize("sql", ["->> ", "SELECT -> 1 FROM analytics.plays"])
def test_sqlglot_type_errors_are_parse_errors(sql):
    """Found by tests/test_property_consumer_sql.py: sqlglot's parser raises TypeError for a
    JSON arrow without a left side; it escaped the rule agent (skein rewrite: traceback)."""
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Escalation)
    assert result.reason.startswith("does not parse as duckdb: TypeError")
