"""Column lineage fixture cases (tests/fixtures/lineage/*.sql), sqlglot-style."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skein.lineage import analyze_sql

PLAYS = ["play_id", "user_id", "track_id", "played_at", "ms_played", "country", "device", "legacy_flag"]
SCHEMAS = {
    "analytics.plays": dict.fromkeys(PLAYS, "x"),
    "analytics.users": dict.fromkeys(["user_id", "country", "plan"], "x"),
    "analytics.tracks": dict.fromkeys(["track_id", "title", "duration_ms"], "x"),
    "staging.plays": dict.fromkeys(["user_id", "ms_played"], "x"),
}
FIXTURES = Path(__file__).parent / "fixtures" / "lineage"


def load_cases():
    for path in sorted(FIXTURES.glob("*.sql")):
        for chunk in re.split(r"^(?=-- title:)", path.read_text(), flags=re.M)[1:]:
            meta, sql = {}, []
            outputs = {}
            for line in chunk.splitlines():
                m = re.match(r"-- (title|dialect|reads|output): ?(.*)", line)
                if m and not sql:
                    key, value = m.groups()
                    if key == "output":
                        name, _, cols = value.partition(":")
                        outputs[name.strip()] = {tuple(c.strip().rsplit(".", 1))
                                                 for c in cols.split(",") if c.strip()}
                    else:
                        meta[key] = value
                else:
                    sql.append(line)
            reads = {}
            for part in meta["reads"].split(";"):
                ds, cols = re.match(r"\s*([\w.]+)\((.*)\)", part).groups()
                reads[ds] = {c.strip() for c in cols.split(",") if c.strip()}
            yield pytest.param("\n".join(sql).strip(), meta.get("dialect", "duckdb"), reads, outputs,
                               id=meta["title"])


@pytest.mark.parametrize("sql, dialect, reads, outputs", list(load_cases()))
def test_lineage_fixture(sql, dialect, reads, outputs):
    lineage = analyze_sql(sql, dialect, SCHEMAS)
    assert lineage.error is None
    assert {d: set(c) for d, c in lineage.reads.items()} == reads
    for name, expected in outputs.items():
        assert lineage.output_lineage[name] == expected


def test_unresolvable_and_unparseable_are_errors_not_exceptions():
    assert analyze_sql("SELEC 1", "duckdb", SCHEMAS).error.startswith("does not parse")
    ambiguous = analyze_sql("SELECT a FROM analytics.plays JOIN ext.other USING (x)", "duckdb", SCHEMAS)
    assert ambiguous.error.startswith("cannot resolve columns")
    assert set(ambiguous.reads) == {"analytics.plays", "ext.other"}  # table level still known
    update = analyze_sql("UPDATE analytics.plays SET device = 'x'", "duckdb", SCHEMAS)
    assert update.error == "cannot resolve columns in a UPDATE statement"


def test_line_numbers():
    lineage = analyze_sql("SELECT\n  user_id\nFROM\n  analytics.plays", "duckdb", SCHEMAS)
    assert lineage.table_lines == {"analytics.plays": [4]}
    assert lineage.column_lines == {("analytics.plays", "user_id"): [2]}
    assert lineage.lines_for("analytics.plays") == [2, 4]


@pytest.mark.parametrize("sql, error", [
    ("SELECT " + "(" * 600 + "user_id" + ")" * 600 + " FROM analytics.plays",
     "does not parse: nested too deeply"),
    ("SELECT " + "CASE WHEN ms_played > 0 THEN " * 600 + "1" + " END" * 600 + " FROM analytics.plays",
     "does not parse: nested too deeply"),
    ("WITH " + ", ".join(f"c{i} AS (SELECT * FROM {f'c{i - 1}' if i else 'analytics.plays'})"
                         for i in range(450)) + " SELECT user_id FROM c449",
     "cannot resolve columns: nested too deeply"),
    ("SELECT user_id FROM " + "(SELECT * FROM " * 600 + "analytics.plays" + ") AS s" * 600,
     "too complex: nested 1,804 levels deep, limit 1,000"),
], ids=["parentheses", "CASE", "CTE chain", "derived tables"])
def test_deep_nesting_is_an_error_not_a_recursion_error(sql, error):
    """Found by tests/test_property_consumer_sql.py: RecursionError escaped analyze_sql (from
    sqlglot's parser and from the scope walk), so one deep consumer stopped discovery. (The
    CTE chain was 600 long; 450, under the parse budget's 500 CTEs, still recurses too deep.
    600 derived tables are now refused by the budget, before the scope walk.)"""
    assert analyze_sql(sql, "duckdb", SCHEMAS).error == error
