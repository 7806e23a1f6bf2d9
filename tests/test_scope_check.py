"""The scope check rejects what changes results beyond the migration (review findings)."""

from __future__ import annotations

import pytest

from skein.rewrite.request import Escalation, Patch
from skein.agents.rule import rewrite
from skein.agents.scope_check import check_patch, check_scope
from test_rule_agent import DBT_MODEL, assert_same_rows, dbt_project, dbt_request, request

REJECTED = {
    "view becomes a table": (
        "CREATE VIEW marts.v AS SELECT user_id, play_id FROM analytics.plays",
        "CREATE TABLE marts.v AS SELECT account_id AS user_id, play_id FROM analytics_v2.plays"),
    "insert columns swapped": (
        "INSERT INTO marts.t (a, b) SELECT user_id, play_id FROM analytics.plays",
        "INSERT INTO marts.t (b, a) SELECT account_id AS user_id, play_id FROM analytics_v2.plays"),
    "DELETE is not verifiable": (
        "DELETE FROM analytics.users WHERE user_id IN (SELECT user_id FROM analytics.plays)",
        "DELETE FROM analytics.users WHERE user_id IN (SELECT user_id FROM analytics_v2.plays)"),
    "aggregate in EXISTS": (
        "SELECT plan FROM analytics.users u WHERE EXISTS (SELECT p.play_id FROM analytics.plays p "
        "WHERE p.user_id = u.user_id)",
        "SELECT plan FROM analytics.users u WHERE EXISTS (SELECT COUNT(*) FROM analytics_v2.plays p "
        "WHERE p.account_id = u.user_id)"),
    "dropped column left out of a DISTINCT CTE": (
        "WITH p AS (SELECT DISTINCT user_id, legacy_flag FROM analytics.plays) SELECT COUNT(*) AS n FROM p",
        "WITH p AS (SELECT DISTINCT account_id AS user_id FROM analytics_v2.plays) SELECT COUNT(*) AS n FROM p"),
    "written COALESCE in a USING query": (
        "SELECT COALESCE(u.user_id, p.user_id) AS uid FROM analytics.plays p LEFT JOIN analytics.users u "
        "USING (user_id)",
        "SELECT u.user_id AS uid FROM analytics_v2.plays p LEFT JOIN analytics.users u ON p.account_id = u.user_id"),
    "engine-named output renamed": (
        "SELECT user_id + 1 FROM analytics.plays",
        "SELECT account_id + 1 AS whatever FROM analytics_v2.plays"),
    "COLUMNS() pattern": (
        "SELECT COLUMNS('user_id|play_id') FROM analytics.plays",
        "SELECT COLUMNS('user_id|play_id') FROM analytics_v2.plays"),
}


@pytest.mark.parametrize("old, new", REJECTED.values(), ids=list(REJECTED))
def test_rejected(old, new):
    verdict = check_scope(request(old, "duckdb"), new)
    assert not verdict.ok and verdict.problems


def test_engine_name_pinned_by_the_rule_is_accepted():
    result = rewrite(request("SELECT user_id + 1 FROM analytics.plays", "duckdb"))
    assert isinstance(result, Patch), result.reason
    assert result.text == 'SELECT account_id + 1 AS "(user_id + 1)" FROM analytics_v2.plays'


@pytest.mark.parametrize("sql, reason", [
    ("WITH p AS (SELECT DISTINCT * EXCLUDE (play_id, played_at, ms_played, track_id, device, country) "
     "FROM analytics.plays) SELECT COUNT(*) AS n FROM p", "`*` outputs legacy_flag"),
    ("SELECT COLUMNS('user_id|play_id') FROM analytics.plays", "COLUMNS(...)"),
    ("SELECT * FROM analytics.plays PIVOT (SUM(ms_played) FOR device IN ('tv', 'web'))", "PIVOT"),
    ("SELECT user_id FROM analytics.plays FULL JOIN analytics.users USING (user_id)", "FULL JOIN"),
])
def test_rule_escalates(sql, reason):
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Escalation) and reason in result.reason


@pytest.mark.parametrize("sql", [
    "SELECT * EXCLUDE legacy_flag FROM analytics.plays WHERE play_id IN (1, 2)",
    "SELECT p.play_id, user_id, x.n FROM analytics.plays p "
    "JOIN (SELECT user_id, COUNT(*) AS n FROM analytics.users GROUP BY user_id) x USING (user_id)",
    "SELECT u.plan, user_id FROM analytics.users u LEFT JOIN analytics.plays p USING (user_id)",
])
def test_rewrites_that_used_to_break(warehouse, sql):
    result = rewrite(request(sql, "duckdb"))
    assert isinstance(result, Patch), result.reason
    assert_same_rows(warehouse, sql, result.text, "duckdb")


def test_dbt_jinja_moves_and_config_changes_are_rejected(tmp_path):
    root, model = dbt_project(tmp_path, DBT_MODEL)
    req = dbt_request(root, model, DBT_MODEL)
    good = rewrite(req)
    assert isinstance(good, Patch)
    moved = good.text.replace("{% if is_incremental() %}\n", "").replace(
        "{% endif %}\n", "{% if is_incremental() %}\n{% endif %}\n")
    config = good.text.replace("materialized='incremental'", "materialized='table'")
    variable = good.text.replace("{{ var('min_ms') }}", "{{ 30000 }}")
    for text in (moved, config, variable):
        assert not check_patch(req, text).ok


def test_undeclared_dbt_source_escalates_instead_of_crashing(tmp_path):
    text = DBT_MODEL.replace("{{ this }}", "{{ source('analytics', 'nope') }}")
    root, model = dbt_project(tmp_path, text)
    result = rewrite(dbt_request(root, model, text))
    assert isinstance(result, Escalation) and "nope" in result.reason


ACCEPTED = {
    "parentheses, quoting and case another author added": (
        "SELECT user_id, ms_played + 1 AS m FROM analytics.plays WHERE device = 'tv'",
        'SELECT "account_id" AS user_id, ((CAST(duration_s * 1000 AS BIGINT)) + 1) AS m '
        "FROM analytics_v2.plays WHERE (DEVICE = 'tv')"),
    "an alias renamed consistently, qualifiers added": (
        "SELECT p.user_id, plan FROM analytics.plays p JOIN analytics.users u ON u.user_id = p.user_id",
        "SELECT x.account_id AS user_id, u.plan FROM analytics_v2.plays x JOIN analytics.users u "
        "ON u.user_id = x.account_id"),
    "USING written as ON by another author": (
        "SELECT title, SUM(ms_played) AS ms FROM analytics.plays JOIN analytics.tracks USING (track_id) "
        "GROUP BY title",
        "SELECT title, SUM(CAST(p.duration_s * 1000 AS BIGINT)) AS ms FROM analytics_v2.plays p "
        "JOIN analytics.tracks t ON p.track_id = t.track_id GROUP BY title"),
}


@pytest.mark.parametrize("old, new", ACCEPTED.values(), ids=list(ACCEPTED))
def test_equivalent_spellings_are_accepted(old, new):
    verdict = check_scope(request(old, "duckdb"), new)
    assert verdict.ok, verdict.problems


MORE_REJECTED = {
    "aliases swapped between tables": (
        "SELECT p.track_id FROM analytics.plays p JOIN analytics.tracks t ON t.track_id = p.track_id",
        "SELECT t.track_id FROM analytics_v2.plays p JOIN analytics.tracks t ON t.track_id = p.track_id"),
    "a kept name now read from another table": (
        "SELECT track_id FROM analytics.plays JOIN analytics.users ON users.user_id = plays.user_id",
        "SELECT users.user_id AS track_id FROM analytics_v2.plays JOIN analytics.users "
        "ON users.user_id = plays.account_id"),
    "a target column the campaign does not map": (
        "SELECT play_id FROM analytics.plays",
        "SELECT duration_s AS play_id FROM analytics_v2.plays"),
    "USING on a column the target lacks": (
        "SELECT plan FROM analytics.plays JOIN analytics.users USING (user_id)",
        "SELECT plan FROM analytics_v2.plays JOIN analytics.users USING (user_id)"),
}


@pytest.mark.parametrize("old, new", MORE_REJECTED.values(), ids=list(MORE_REJECTED))
def test_more_rejected(old, new):
    verdict = check_scope(request(old, "duckdb"), new)
    assert not verdict.ok and verdict.problems
