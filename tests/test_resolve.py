"""Column resolution without qualify (tests/fixtures/resolve/cases.sql): which source each
column node reads, and the names that must escalate rather than be guessed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlglot

from skein.rewrite.resolve import ALIAS, Catalog, Resolution, Unresolved

FIXTURES = Path(__file__).parent / "fixtures" / "resolve" / "cases.sql"
SCHEMAS = {
    "a.plays": {"user_id": "INT", "track_id": "INT", "ms": "INT"},
    "a.users": {"user_id": "INT", "plan": "TEXT"},
    "a.tracks": {"track_id": "INT", "title": "TEXT"},
}


def load_cases():
    for chunk in re.split(r"^(?=-- title:)", FIXTURES.read_text(), flags=re.M)[1:]:
        title, body = chunk.split("\n", 1)
        dialect = re.search(r"^-- dialect: (\w+)$", body, flags=re.M)
        sql = re.split(r"^-- (?:dialect|expect|unresolved):", body, flags=re.M)[0].strip()
        unresolved = re.search(r"^-- unresolved: (.*)$", body, flags=re.M)
        expected = body.split("-- expect:\n", 1)[1].strip().splitlines() if "-- expect:" in body else None
        yield pytest.param(sql, dialect.group(1) if dialect else "duckdb", expected,
                           unresolved.group(1) if unresolved else None,
                           id=title[len("-- title:"):].strip())


@pytest.mark.parametrize("sql, dialect, expected, unresolved", list(load_cases()))
def test_resolution(sql, dialect, expected, unresolved):
    query = sqlglot.parse_one(sql, read=dialect)
    catalog = Catalog(SCHEMAS)
    if unresolved is not None:
        with pytest.raises(Unresolved, match=re.escape(unresolved)):
            Resolution(query, catalog, dialect)
        return
    resolution = Resolution(query, catalog, dialect)
    found = [f"{column.sql(dialect=dialect)} -> {ref.kind} {'-' if ref.kind != 'source' else ref.name}"
             for column, ref in resolution.refs]
    assert found == expected


def test_the_tree_is_not_changed():
    sql = "SELECT user_id, SUM(ms) FROM a.plays JOIN a.users USING (user_id) GROUP BY 1 ORDER BY 2"
    query = sqlglot.parse_one(sql)
    Resolution(query, Catalog(SCHEMAS), "duckdb")
    assert query.sql() == sqlglot.parse_one(sql).sql()


def test_a_swapped_view_reads_the_target_columns():
    """The edit check asks what a name reads once a table reads another dataset."""
    query = sqlglot.parse_one("SELECT p.ms FROM a.plays AS p WHERE p.ms > 1")
    resolution = Resolution(query, Catalog(SCHEMAS), "duckdb")
    table = query.find(sqlglot.exp.Table)
    column = query.find(sqlglot.exp.Column)
    view = resolution.swapped({id(table): ("p", ("duration", "user_id"))})
    assert view.name_at(resolution.root, column, "p", "duration").name == "p"
    assert view.name_at(resolution.root, column, "", "user_id").kind == "source"
    with pytest.raises(Unresolved):
        view.name_at(resolution.root, column, "p", "ms")
    assert ALIAS == "alias"
