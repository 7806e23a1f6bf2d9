"""Property: no consumer file makes discovery, lineage or the rule agent raise.

Generated consumer files (token soup, real queries truncated, spliced and mutated, odd dialect
features, deep nesting, huge lists, binary and non-UTF-8 bytes, CRLF, NUL, Jinja) are written
into a real git repository of a campaign and go through what ``skein plan`` runs on them:
``build_catalog`` (reading, lineage), ``assess_impact`` (a status per consumer), then for each
consumer to rewrite ``request_for`` and the rule agent (its rules and scope check); and
``skein rewrite CAMPAIGN FILE``. Every consumer ends as one of: not impacted (unchanged),
unparseable, escalated with a reason, verify, or patched; nothing raises, the CLI exits 0, 2
or 3 with no traceback. 1,000 generated files per property (``ci`` profile, conftest.py).
"""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import duckdb
import pytest
import yaml
from hypothesis import event, example, given
from hypothesis import strategies as st

from conftest import make_git_repo
from test_rule_agent import CASES, COLUMNS, DATA
from skein.agents.requests import request_for
from skein.agents.rule import rewrite
from skein.catalog import build_catalog
from skein.cli import main
from skein.discovery import STATUSES, assess_impact
from skein.rewrite.request import Escalation, Patch
from skein.spec import load_campaign
from skein.warehouse import open_warehouse

DIALECTS = ("duckdb", "bigquery", "snowflake", "postgres", "mysql", "tsql", "spark", "trino")

# -- real queries, and pieces of SQL ----------------------------------------------------

REAL = [c.values[1] for c in CASES] + [
    "SELECT p.*, u.plan FROM analytics.plays p LEFT JOIN analytics.users u USING (user_id)",
    "SELECT user_id, ROW_NUMBER() OVER (PARTITION BY country ORDER BY played_at) AS rn "
    "FROM analytics.plays QUALIFY rn = 1",
    "SELECT * EXCLUDE (legacy_flag) REPLACE (ms_played / 1000 AS ms_played) FROM analytics.plays",
    "SELECT * FROM analytics.plays PIVOT (SUM(ms_played) FOR country IN ('SE', 'DE'))",
    "SELECT user_id, x FROM analytics.plays, UNNEST([1, 2]) AS t(x)",
    "SELECT user_id FROM analytics.plays, LATERAL (SELECT user_id) x",
    "SELECT COLUMNS('.*_id') FROM analytics.plays",
    "SELECT {'a': user_id}.a, [ms_played][1], ms_played::VARCHAR FROM analytics.plays",
    "INSERT INTO marts.x SELECT user_id FROM analytics.plays",
    "CREATE OR REPLACE VIEW marts.v AS SELECT user_id, ms_played FROM analytics.plays",
    "MERGE INTO marts.t USING analytics.plays p ON t.id = p.play_id WHEN MATCHED THEN UPDATE SET x = 1",
    "UPDATE analytics.plays SET ms_played = 0 WHERE user_id = 1",
    "DELETE FROM analytics.plays WHERE legacy_flag",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
    "SELECT n, user_id FROM r, analytics.plays",
    "SELECT `user_id` FROM `proj.analytics.plays`",
    "SELECT [user_id] FROM [analytics].[plays]",
    'SELECT "USER_ID" FROM "ANALYTICS"."PLAYS"',
    "SELECT user_id FROM analytics.plays WHERE country = $1 AND device = :device AND x = ?",
    "SELECT user_id FROM analytics.plays TABLESAMPLE (10 PERCENT)",
    "SELECT user_id FROM analytics.plays FOR UPDATE",
    "SELECT TOP 5 user_id FROM analytics.plays",
    "SELECT user_id FROM analytics.plays GROUP BY ALL ORDER BY ALL",
    "SELECT user_id FROM analytics.plays MATCH_RECOGNIZE (ORDER BY played_at PATTERN (a) DEFINE a AS true)",
    "SELECT * FROM read_csv('x.csv') JOIN analytics.plays USING (user_id)",
    "COPY (SELECT user_id FROM analytics.plays) TO 'x.csv'",
    "SELECT user_id FROM analytics.plays -- comment\n/* block */ WHERE 1 = 1 # hash\n",
    "{{ config(materialized='table') }}\nselect user_id from {{ source('analytics', 'plays') }}",
    "SELECT a.b.c.d.e FROM analytics.plays",
    "SELECT user_id FROM analytics.plays AS p(a, b, c, d, e, f, g, h, i, j)",
    "SELECT * FROM analytics.plays NATURAL JOIN analytics.users",
    "SELECT user_id FROM analytics.plays UNION SELECT user_id FROM analytics.users "
    "EXCEPT SELECT 1 INTERSECT SELECT 2",
    "VALUES (1, 2), (3, 4)",
    "SELECT 1; SELECT user_id FROM analytics.plays;;",
]
KEYWORDS = ("SELECT FROM WHERE GROUP BY ORDER HAVING JOIN LEFT RIGHT FULL CROSS USING ON AS WITH "
            "UNION ALL DISTINCT CASE WHEN THEN ELSE END CAST OVER PARTITION QUALIFY PIVOT UNPIVOT "
            "LATERAL UNNEST EXCLUDE REPLACE RENAME INSERT INTO CREATE VIEW TABLE OR MERGE UPDATE "
            "SET DELETE COPY ATTACH INSTALL VALUES LIMIT OFFSET FETCH WINDOW FILTER WITHIN ARRAY "
            "STRUCT MAP INTERVAL RECURSIVE MATERIALIZED EXISTS NOT IN IS NULL TRUE LIKE ILIKE "
            "BETWEEN AND ROWS RANGE PRECEDING TOP DECLARE BEGIN COMMIT PRAGMA EXPLAIN").split()
NAMES = ["analytics.plays", "analytics_v2.plays", "analytics.users", "p", "u", "user_id",
         "ms_played", "country", "legacy_flag", "play_id", "`analytics.plays`",
         '"analytics"."plays"', "[analytics].[plays]", "plays.user_id", "p.user_id", "p.*", "*",
         "COLUMNS('.*')", "count(*)", "sum(ms_played)", "analytics.plays.user_id",
         "read_csv('/etc/passwd')", "x", "ÿ", "名前", '"a""b"', "$1", "@x", ":name", "?"]
SYMBOLS = [",", "(", ")", ".", ";", "+", "-", "*", "/", "%", "||", "::", "->", "->>", "=", "<>",
           "!=", "<", ">=", "!", "~", "&", "|", "^", ":", "[", "]", "{", "}", "=>", "@>", "'", '"',
           "`", "$$", "\\"]
LITERALS = ["1", "0", "-1", "1.5e10", "1e999", "'str'", "'it''s'", "'unterminated", "E'\\x41'",
            "$$dollar$$", "X'ff'", "B'01'", "DATE '2024-01-01'", "NULL", "'\u202e'",
            str(10 ** 40), "INTERVAL 1 DAY", "TIMESTAMP 'x'"]
COMMENTS = ["-- c\n", "/* c */", "/* unterminated", "# hash\n", "--\n", "/* /* nested */ */",
            "{# jinja #}", "{{ ref('x') }}", "{% if x %}", "{% endif %}", "{{", "}}"]
SPACE = [" ", " ", " ", "\n", "\t", "\r\n", "\r", "\u00a0", "\u2028", "\x0b", "\x00", ""]

TOKENS = st.one_of(st.sampled_from(KEYWORDS), st.sampled_from(NAMES), st.sampled_from(SYMBOLS),
                   st.sampled_from(LITERALS), st.sampled_from(COMMENTS),
                   st.text(st.characters(codec="utf-8"), max_size=6))
TOKEN_SOUP = st.lists(st.tuples(TOKENS, st.sampled_from(SPACE)), max_size=60).map(
    lambda pairs: "".join(t + s for t, s in pairs))


@st.composite
def edited_queries(draw) -> str:
    """A real query truncated, spliced with another, or with tokens inserted and removed."""
    sql = draw(st.sampled_from(REAL))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(sql)))
        edit = draw(st.sampled_from(["truncate", "splice", "insert", "delete", "swap_case",
                                     "repeat"]))
        if edit == "truncate":
            sql = sql[:at]
        elif edit == "splice":
            other = draw(st.sampled_from(REAL))
            sql = sql[:at] + other[draw(st.integers(0, len(other))):]
        elif edit == "insert":
            sql = sql[:at] + " " + draw(TOKENS) + " " + sql[at:]
        elif edit == "delete":
            sql = sql[:at] + sql[at + draw(st.integers(1, 15)):]
        elif edit == "swap_case":
            sql = sql.swapcase()
        else:
            sql = sql[:at] + sql[at:at + 30] * draw(st.integers(2, 5)) + sql[at + 30:]
    return sql


def _nested(kind: str, n: int) -> str:
    if kind == "parens":
        return "SELECT " + "(" * n + "user_id" + ")" * n + " FROM analytics.plays"
    if kind == "plus":
        return "SELECT " + " + ".join(["ms_played"] * n) + " FROM analytics.plays"
    if kind == "and":
        return "SELECT user_id FROM analytics.plays WHERE " + " AND ".join(
            f"ms_played > {i}" for i in range(n))
    if kind == "in":
        return f"SELECT user_id FROM analytics.plays WHERE play_id IN ({', '.join(map(str, range(n)))})"
    if kind == "subqueries":
        return "SELECT user_id FROM " + "(SELECT * FROM " * n + "analytics.plays" + ") AS s" * n
    if kind == "ctes":
        ctes = ", ".join(f"c{i} AS (SELECT * FROM {'c' + str(i - 1) if i else 'analytics.plays'})"
                         for i in range(n))
        return f"WITH {ctes} SELECT user_id FROM c{n - 1}"
    if kind == "case":
        return "SELECT " + "CASE WHEN ms_played > 0 THEN " * n + "1" + " END" * n + \
            " FROM analytics.plays"
    return "SELECT user_id FROM analytics.plays UNION ALL " * n + "SELECT user_id FROM analytics.plays"


NESTED = st.builds(_nested, st.sampled_from(["parens", "plus", "and", "in", "subqueries", "ctes",
                                             "case", "unions"]),
                   st.sampled_from([2, 10, 50, 150, 300]))  # deeper (slow): FOUND below


def _in_dialect(sql: str, dialect: str) -> str:
    """A real query written in another dialect, as its authors there would (when sqlglot can)."""
    import sqlglot

    try:
        return ";\n".join(sqlglot.transpile(sql, read="duckdb", write=dialect))
    except Exception:  # noqa: BLE001 - sqlglot cannot write every query in every dialect
        return sql


@st.composite
def consumer_files(draw, dialect: str = "duckdb") -> bytes:
    real = st.sampled_from(REAL)
    if dialect != "duckdb":
        real = real.map(lambda sql: _in_dialect(sql, dialect))
    text = draw(st.one_of(TOKEN_SOUP, edited_queries(), edited_queries(), NESTED, real, real, real))
    data = text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none"] * 6 + ["bytes", "latin1", "bom", "crlf", "binary"]))
    if damage == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    elif damage == "latin1":
        data = text.encode("latin-1", "replace") + " -- Göteborg\n".encode("latin-1")
    elif damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif damage == "binary":
        data = draw(st.binary(max_size=300))
    return data


# -- a campaign whose repositories hold the generated file ------------------------------

class Fleet:
    def __init__(self, root: Path):
        con = duckdb.connect(str(root / "wh.duckdb"))
        con.execute(DATA)
        con.close()
        self.campaigns, self.files = {}, {}
        for dialect in DIALECTS:
            repo = make_git_repo(root / "repos" / dialect, {"q.sql": "SELECT 1\n"})
            self.files[dialect] = repo / "q.sql"
            spec = {"campaign": f"props-{dialect}", "title": "t", "owners": ["a"],
                    "warehouse": "duckdb:///wh.duckdb", "source": "analytics.plays",
                    "target": "analytics_v2.plays", "columns": COLUMNS,
                    "consumers": [{"repo": f"repos/{dialect}", "dialect": dialect}]}
            path = root / f"{dialect}.yaml"
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            self.campaigns[dialect] = path
        self.loaded = {d: load_campaign(p) for d, p in self.campaigns.items()}
        self.warehouse = open_warehouse("duckdb:///wh.duckdb", root)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return Fleet(tmp_path_factory.mktemp("consumer-sql"))


def check_consumer_file(fleet: Fleet, dialect: str, data: bytes) -> None:
    fleet.files[dialect].write_bytes(data)
    campaign = fleet.loaded[dialect]
    catalog = build_catalog(campaign, fleet.warehouse, workers=1)
    report = assess_impact(campaign, catalog)
    [consumer] = catalog.consumers
    impacted = {c.id: c for c in report.consumers}
    item = impacted.get(consumer.id)
    if item is None:
        event("unparseable" if consumer.id in report.unparseable else "not impacted")
        return
    assert item.status in STATUSES
    if item.status != "rewrite":
        assert item.reason or item.status == "verify", item
        event(f"discovery: {item.status}")
        return
    result = rewrite(request_for(campaign, catalog, consumer))
    if isinstance(result, Escalation):
        assert result.reason.strip()
        event("escalated: " + _kind(result.reason))
    else:
        assert isinstance(result, Patch) and result.changes and result.text != result.original
        event("patched")


def _kind(reason: str) -> str:
    return re.sub(r"^line \d+: ", "", reason).split(":")[0].split("`")[0][:40]


def _check_cli(fleet: Fleet, dialect: str) -> int:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["rewrite", str(fleet.campaigns[dialect]), str(fleet.files[dialect])])
    assert code in (0, 2, 3), (code, err.getvalue()[-2000:])
    assert "Traceback" not in err.getvalue()
    return code


# Each found a bug (fixed; regression tests in test_lineage.py and test_rule_agent.py).
FOUND = [
    ("duckdb", _nested("parens", 3000).encode()),  # RecursionError from sqlglot's parser
    ("duckdb", _nested("case", 600).encode()),  # the same, in the rule agent
    ("duckdb", _nested("ctes", 600).encode()),  # RecursionError from the lineage scope walk
    ("bigquery", _nested("plus", 200).encode()),  # DuckDB cannot name the output column
    ("tsql", _nested("plus", 1200).encode()),  # ... nor parse it, in the scope check
    ("duckdb", b"SELECT p.user_id, x.m FROM analytics.plays p, LATERAL (SELECT p.ms_played + 1 AS m) x"),
    ("trino", b"SELECT user_id FROM analytics.plays -- G\xf6teborg\n"),  # skein rewrite: not UTF-8
    ("duckdb", b"->> "),  # TypeError from sqlglot's parser
]


def with_found(test):
    for case in FOUND:
        test = example(case)(test)
    return test


FILES = st.sampled_from(DIALECTS).flatmap(lambda d: st.tuples(st.just(d), consumer_files(d)))


@given(FILES)
@with_found
def test_any_consumer_file_gets_a_status_never_a_traceback(fleet, case):
    check_consumer_file(fleet, *case)


@given(FILES)
@with_found
def test_skein_rewrite_on_any_file_exits_with_a_status(fleet, case):
    """``skein rewrite CAMPAIGN FILE`` reads the file itself (a consumer's own CI)."""
    dialect, data = case
    fleet.files[dialect].write_bytes(data)
    event(f"skein rewrite exit {_check_cli(fleet, dialect)}")
