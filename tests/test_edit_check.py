"""The edit check (skein.agents.edit_check) proves rule patches without parsing them whole;
it may only ever accept what the full scope check accepts."""

from __future__ import annotations

import pytest
import sqlglot

from skein.agents.edit_check import check_edits
from skein.agents.scope_check import check_scope
from skein.rewrite.edits import Edit, apply_edits
from skein.agents.testing import rule_patch
from test_rule_agent import CASES, OTHER_DIALECTS, request

PATCHED = [c for c in CASES if c.values[3] is None]


def verdicts(req, edits=None):
    """(edit check, full check) on the rule's edits, or on ``edits`` instead."""
    original, rule_edits, _ = rule_patch(req)
    edits = rule_edits if edits is None else edits
    text = apply_edits(req.text, edits)
    return check_edits(req, original, edits, text), check_scope(req, text).ok


def test_agrees_with_the_full_check_on_every_fixture():
    """Every fixture's rule patch passes the full check; the edit check proves most of
    them itself (stars, USING on renamed columns and pinned names go to the full check)."""
    proven = 0
    for case in PATCHED:
        dialect, sql = case.values[0], case.values[1]
        fast, full = verdicts(request(sql, dialect))
        assert full, sql
        proven += fast
    assert proven >= len(PATCHED) // 2, (proven, len(PATCHED))


@pytest.mark.parametrize("target_dialect", OTHER_DIALECTS)
def test_agrees_in_other_dialects(target_dialect):
    for case in PATCHED:
        dialect, sql = case.values[0], case.values[1]
        if dialect != "duckdb":
            continue
        try:
            translated = ";\n".join(sqlglot.transpile(sql, read="duckdb", write=target_dialect,
                                                      unsupported_level=sqlglot.ErrorLevel.RAISE))
        except sqlglot.errors.UnsupportedError:
            continue
        fast, full = verdicts(request(translated, target_dialect))
        assert full or not fast, translated


PROVEN = [
    "SELECT p.user_id, COUNT(*) AS n FROM analytics.plays AS p GROUP BY 1",
    "SELECT title, ms_played, plan FROM analytics.plays JOIN analytics.tracks ON tracks.track_id = plays.track_id "
    "JOIN analytics.users ON users.user_id = plays.user_id",
    "SELECT u.plan, (SELECT MAX(p2.played_at) FROM analytics.plays p2 WHERE p2.user_id = u.user_id) AS last "
    "FROM analytics.users u",
    "SELECT title, SUM(ms_played) AS ms FROM analytics.plays JOIN analytics.tracks USING (track_id) GROUP BY title",
]


@pytest.mark.parametrize("sql", PROVEN)
def test_proves_plain_rewrites(sql):
    assert verdicts(request(sql, "duckdb")) == (True, True)


DEFERRED = {
    "star over the source": "SELECT * EXCLUDE (legacy_flag) FROM analytics.plays",
    "USING on a renamed column": "SELECT user_id, plan FROM analytics.plays JOIN analytics.users USING (user_id)",
    "pinned output name": "SELECT user_id + 1 FROM analytics.plays",
    "output named after its column": "SELECT CAST(user_id AS TEXT) AS u, CAST(ms_played AS TEXT) FROM analytics.plays",
}


@pytest.mark.parametrize("sql", DEFERRED.values(), ids=list(DEFERRED))
def test_defers_what_it_does_not_prove(sql):
    fast, _ = verdicts(request(sql, "duckdb"))
    assert not fast


def corrupted(req, before: str, after: str):
    """The rule's edits with the replacement of ``before`` (the replaced text) changed."""
    _, edits, _ = rule_patch(req)
    found = [e for e in edits if req.text[e.start:e.end] == before]
    assert found, before
    return [Edit(e.start, e.end, after, e.why) if e is found[0] else e for e in edits]


def dropped(req, before: str):
    _, edits, _ = rule_patch(req)
    return [e for e in edits if req.text[e.start:e.end] != before]


RULE_BUGS = {
    "parentheses missing in an operator context": (
        "SELECT 2 / ms_played AS r FROM analytics.plays", "ms_played", "CAST(duration_s AS BIGINT) * 1000"),
    "another target column": (
        "SELECT user_id, track_id FROM analytics.plays", "user_id", "track_id AS user_id"),
    "another table's column": (
        "SELECT p.user_id FROM analytics.plays p JOIN analytics.users u ON u.user_id = p.user_id",
        "p.user_id", "u.user_id AS user_id"),
    "bare projection renamed": (
        "SELECT user_id FROM analytics.plays", "user_id", "account_id"),
    "a comment swallowing the rest": (
        "SELECT user_id FROM analytics.plays WHERE device = 'tv'", "user_id", "account_id AS user_id --"),
    "an extra projection": (
        "SELECT user_id FROM analytics.plays", "user_id", "account_id AS user_id, play_id"),
    "a different campaign expression": (
        "SELECT SUM(ms_played) AS ms FROM analytics.plays", "ms_played", "CAST(duration_s * 100 AS BIGINT)"),
}


@pytest.mark.parametrize("sql, before, after", RULE_BUGS.values(), ids=list(RULE_BUGS))
def test_rule_bugs_are_never_proven(sql, before, after):
    req = request(sql, "duckdb")
    fast, full = verdicts(req, corrupted(req, before, after))
    assert not fast and not full


def test_a_source_reference_left_alone_is_never_proven():
    req = request("SELECT user_id, track_id FROM analytics.plays WHERE user_id > 3", "duckdb")
    _, edits, _ = rule_patch(req)
    last = max(edits, key=lambda e: e.start if req.text[e.start:e.end] == "user_id" else -1)
    fast, full = verdicts(req, [e for e in edits if e is not last])
    assert not fast and not full


def test_a_table_renamed_away_from_its_qualifiers_is_never_proven():
    """The rules keep the old name as alias when columns are qualified with it."""
    req = request("SELECT plays.device FROM analytics.plays", "duckdb")
    req = req.model_copy(update={"target": "analytics_v2.listens", "schemas": {
        **req.schemas, "analytics_v2.listens": req.schemas["analytics_v2.plays"]}})
    assert verdicts(req) == (True, True)
    _, edits, _ = rule_patch(req)
    without_alias = [e for e in edits if e.text != " AS plays"]
    assert len(without_alias) == len(edits) - 1
    fast, full = verdicts(req, without_alias)
    assert not fast and not full


def test_a_table_left_on_the_source_is_never_proven():
    req = request("SELECT track_id FROM analytics.plays", "duckdb")
    fast, full = verdicts(req, [])
    assert not fast and not full
