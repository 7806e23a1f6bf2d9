"""Discovery on a small hand-built fleet: real git repos, a real DuckDB warehouse."""

from __future__ import annotations

import json
import textwrap

import duckdb
import pytest

from conftest import make_git_repo
from skein.cli import main
from skein.discovery import discover
from skein.spec import load_campaign

WAREHOUSE = """
CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2; CREATE SCHEMA staging; CREATE SCHEMA marts;
CREATE TABLE analytics.plays (play_id BIGINT, user_id BIGINT, track_id BIGINT, played_at TIMESTAMP,
                              ms_played BIGINT, country VARCHAR, legacy_flag BOOLEAN);
CREATE TABLE analytics.users (user_id BIGINT, country VARCHAR, plan VARCHAR);
CREATE TABLE analytics.tracks (track_id BIGINT, title VARCHAR, duration_ms BIGINT);
CREATE TABLE staging.plays (user_id BIGINT, ms_played BIGINT);
CREATE TABLE analytics_v2.plays (play_id BIGINT, account_id BIGINT, track_id BIGINT,
                                 played_at TIMESTAMP, duration_s DECIMAL(12,3), country_code VARCHAR);
-- deployed from growth/views/daily.sql: not a consumer of its own
CREATE VIEW marts.daily AS SELECT user_id, CAST(played_at AS DATE) AS day, SUM(ms_played) AS ms,
    ANY_VALUE(legacy_flag) AS flag FROM analytics.plays GROUP BY ALL;
CREATE VIEW marts.wide AS SELECT * FROM analytics.plays;
COMMENT ON VIEW marts.wide IS 'owner=team-views tier=1';
CREATE VIEW marts.wide_users AS SELECT user_id, country FROM marts.wide;
CREATE VIEW marts.wide_flags AS SELECT play_id, legacy_flag FROM marts.wide;
CREATE VIEW marts.users_only AS SELECT plan FROM analytics.users;
"""

CATALOG_INFO = """\
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: {name}
  annotations: {annotations}
spec:
  owner: {owner}
  lifecycle: production
"""

GROWTH = {
    "catalog-info.yaml": CATALOG_INFO.format(name="growth", owner="team-growth",
                                             annotations='{"skein/tier": "2"}'),
    "queries/alias.sql": "-- top users\nSELECT p.user_id, COUNT(*) AS n\nFROM analytics.plays AS p\nGROUP BY 1\n",
    "queries/cte.sql": textwrap.dedent("""\
        WITH recent AS (
          SELECT user_id, ms_played, legacy_flag FROM analytics.plays WHERE played_at > '2024-01-01'
        )
        SELECT user_id, SUM(ms_played) AS total FROM recent GROUP BY user_id
        """),
    "queries/subquery.sql": "SELECT t.title, x.n FROM (SELECT track_id, COUNT(*) AS n FROM analytics.plays "
                            "GROUP BY track_id) AS x JOIN analytics.tracks AS t ON t.track_id = x.track_id\n",
    "queries/collide.sql": "SELECT u.country, COUNT(DISTINCT p.user_id) AS listeners\nFROM analytics.plays p\n"
                           "JOIN analytics.users u ON u.user_id = p.user_id\nGROUP BY u.country\n",
    "queries/unqualified_join.sql": "SELECT track_id, ms_played, title FROM analytics.plays JOIN analytics.tracks USING (track_id)\n",
    "queries/star.sql": "SELECT * FROM analytics.plays WHERE country = 'SE'\n",
    "queries/count.sql": "SELECT COUNT(*) FROM analytics.plays\n",
    "queries/correlated.sql": "SELECT u.plan FROM analytics.users u WHERE EXISTS (SELECT 1 FROM analytics.plays p "
                              "WHERE p.user_id = u.user_id AND p.ms_played > 30000)\n",
    "queries/decoy.sql": "SELECT user_id, ms_played FROM staging.plays\n",
    "queries/broken.sql": "SELEC user_id FROM analytics.plays WHERE\n",
    "queries/broken_elsewhere.sql": "SELEC nothing FROM analytics.users WHERE\n",
    "views/daily.sql": "CREATE OR REPLACE VIEW marts.daily AS\nSELECT user_id, CAST(played_at AS DATE) AS day, "
                       "SUM(ms_played) AS ms, ANY_VALUE(legacy_flag) AS flag\nFROM analytics.plays GROUP BY ALL\n",
    "views/on_daily.sql": "SELECT day, SUM(ms) AS ms FROM marts.daily GROUP BY day\n",
    "views/on_daily_flag.sql": "SELECT day FROM marts.daily WHERE flag\n",
    "finance/catalog-info.yaml": CATALOG_INFO.format(
        name="fin", owner="team-finance", annotations='{"skein/tier": "1", "skein/dialect": "snowflake"}'),
    "finance/revenue.sql": "SELECT USER_ID, IFF(MS_PLAYED > 1000, 1, 0) AS LONG_PLAY\nFROM ANALYTICS.PLAYS\n"
                           "QUALIFY ROW_NUMBER() OVER (PARTITION BY USER_ID ORDER BY PLAYED_AT DESC) = 1\n",
}

DBT = {
    "CODEOWNERS": "* @team-dbt\n",
    "dbt_project.yml": "name: music\nprofile: music\nmodel-paths: [models]\nvars: {min_ms: 30000}\n"
                       "models:\n  music:\n    marts:\n      +schema: marts\n",
    "profiles.yml": "music:\n  target: dev\n  outputs:\n    dev: {type: duckdb, schema: dbt}\n",
    "models/sources.yml": "version: 2\nsources:\n  - name: analytics\n    tables: [{name: plays}, {name: users}]\n",
    "macros/ms.sql": "{% macro seconds(col) %}{{ col }} / 1000.0{% endmacro %}\n",
    "models/staging/stg_plays.sql": textwrap.dedent("""\
        {{ config(materialized='incremental') }}
        select play_id, user_id, {{ seconds('ms_played') }} as seconds, played_at
        from {{ source('analytics', 'plays') }}
        where ms_played >= {{ var('min_ms') }}
        {% if is_incremental() %}
          and played_at > (select max(played_at) from {{ this }})
        {% endif %}
        """),
    "models/marts/user_seconds.sql": "select user_id, sum(seconds) as seconds\n"
                                     "from {{ ref('stg_plays') }}\ngroup by user_id\n",
    "models/marts/plans.sql": "select plan from {{ source('analytics', 'users') }}\n",
    "models/marts/broken_jinja.sql": "select * from {{ ref('stg_plays') }} {{ unknown_macro() }}\n",
}

# id -> (status, impact, level, columns, owner, tier)
EXPECTED = {
    "growth/queries/alias.sql": ("rewrite", "direct", 1, ["user_id"], "team-growth", 2),
    "growth/queries/cte.sql": ("rewrite", "direct", 1, ["ms_played", "played_at", "user_id"], "team-growth", 2),
    "growth/queries/subquery.sql": ("rewrite", "direct", 1, ["track_id"], "team-growth", 2),
    "growth/queries/collide.sql": ("rewrite", "direct", 1, ["user_id"], "team-growth", 2),
    "growth/queries/unqualified_join.sql": ("rewrite", "direct", 1, ["ms_played", "track_id"], "team-growth", 2),
    "growth/queries/star.sql": ("escalate", "direct", 1, ["country", "legacy_flag", "ms_played", "play_id",
                                                          "played_at", "track_id", "user_id"], "team-growth", 2),
    "growth/queries/count.sql": ("rewrite", "direct", 1, [], "team-growth", 2),
    "growth/queries/correlated.sql": ("rewrite", "direct", 1, ["ms_played", "user_id"], "team-growth", 2),
    "growth/queries/broken.sql": ("escalate", "direct", 1, [], "team-growth", 2),
    "growth/views/daily.sql": ("escalate", "direct", 1, ["legacy_flag", "ms_played", "played_at", "user_id"],
                               "team-growth", 2),
    "growth/views/on_daily.sql": ("verify", "transitive", 2, ["ms_played", "played_at"], "team-growth", 2),
    "growth/views/on_daily_flag.sql": ("escalate", "transitive", 2, ["legacy_flag", "played_at"], "team-growth", 2),
    "growth/finance/revenue.sql": ("rewrite", "direct", 1, ["ms_played", "played_at", "user_id"], "team-finance", 1),
    "music-dbt/models/staging/stg_plays.sql": ("rewrite", "direct", 1,
                                               ["ms_played", "play_id", "played_at", "user_id"], "team-dbt", None),
    "music-dbt/models/marts/user_seconds.sql": ("verify", "transitive", 2, ["ms_played", "user_id"], "team-dbt", None),
    "music-dbt/models/marts/broken_jinja.sql": ("escalate", "transitive", 2, [], "team-dbt", None),
    "warehouse/marts.wide": ("escalate", "direct", 1, ["country", "legacy_flag", "ms_played", "play_id",
                                                       "played_at", "track_id", "user_id"], "team-views", 1),
    "warehouse/marts.wide_users": ("verify", "transitive", 2, ["country", "user_id"], "unowned", None),
    "warehouse/marts.wide_flags": ("escalate", "transitive", 2, ["legacy_flag", "play_id"], "unowned", None),
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    con.execute(WAREHOUSE)
    con.close()
    make_git_repo(root / "repos" / "growth", GROWTH)
    make_git_repo(root / "repos" / "music-dbt", DBT)
    (root / "repos" / "not-a-repo").mkdir()
    (root / "campaign.yaml").write_text(textwrap.dedent("""\
        campaign: plays-v2
        title: Move plays
        owners: [data-platform]
        warehouse: duckdb:///warehouse.duckdb
        source: analytics.plays
        target: analytics_v2.plays
        columns:
          user_id: account_id
          ms_played: CAST(duration_s * 1000 AS BIGINT)
          country: country_code
          legacy_flag: null
        consumers:
          - repo: repos/*
          - warehouse_views: true
        """))
    return root


@pytest.fixture(scope="module")
def report(fleet):
    return discover(load_campaign(fleet / "campaign.yaml"), workers=1)


def test_impacted_set_is_exact(report):
    assert {c.id for c in report.consumers} == set(EXPECTED)


@pytest.mark.parametrize("cid", sorted(EXPECTED))
def test_each_consumer(report, cid):
    c = {c.id: c for c in report.consumers}[cid]
    status, impact, level, columns, owner, tier = EXPECTED[cid]
    assert (c.status, c.impact, c.level, c.columns, c.owner, c.tier) == \
        (status, impact, level, columns, owner, tier), c.reason


def test_reasons(report):
    by_id = {c.id: c for c in report.consumers}
    assert by_id["growth/queries/star.sql"].reason == "uses dropped column(s) legacy_flag"
    assert by_id["growth/views/on_daily_flag.sql"].reason == \
        "reads marts.daily.flag, derived from dropped column(s) legacy_flag"
    assert by_id["growth/queries/broken.sql"].reason.startswith("cannot analyse: does not parse")
    assert "unknown_macro" in by_id["music-dbt/models/marts/broken_jinja.sql"].reason
    assert by_id["growth/queries/alias.sql"].reason is None


def test_unparseable_without_mention_is_reported_not_listed(report):
    assert report.unparseable == ["growth/queries/broken_elsewhere.sql"]


def test_kinds_dialects_and_produced_datasets(report):
    by_id = {c.id: c for c in report.consumers}
    assert by_id["music-dbt/models/staging/stg_plays.sql"].kind == "dbt_model"
    assert by_id["music-dbt/models/staging/stg_plays.sql"].produces == "dbt.stg_plays"
    assert by_id["music-dbt/models/marts/user_seconds.sql"].produces == "dbt_marts.user_seconds"
    assert by_id["growth/views/daily.sql"].produces == "marts.daily"
    assert by_id["warehouse/marts.wide"].kind == "view"
    assert by_id["growth/finance/revenue.sql"].dialect == "snowflake"
    assert by_id["growth/queries/alias.sql"].dialect == "duckdb"
    # The deployed view of growth/views/daily.sql is not a second consumer.
    assert "warehouse/marts.daily" not in by_id
    assert report.derived_datasets == {"dbt.stg_plays": 1, "dbt_marts.user_seconds": 2,
                                       "marts.daily": 1, "marts.wide": 1, "marts.wide_flags": 2,
                                       "marts.wide_users": 2, "dbt_marts.broken_jinja": 2}


def test_line_numbers_point_into_the_original_file(report):
    by_id = {c.id: c for c in report.consumers}
    refs = {r.dataset: r.lines for r in by_id["growth/queries/alias.sql"].references}
    assert refs == {"analytics.plays": [2, 3]}  # p.user_id on line 2, the table on line 3
    # dbt: line 3 of the file is the source() line even though config() rendered to nothing
    refs = {r.dataset: r.lines for r in by_id["music-dbt/models/staging/stg_plays.sql"].references}
    assert 3 in refs["analytics.plays"] and 4 in refs["analytics.plays"]


def test_order_is_topological(report):
    order = {c.id: c.order for c in report.consumers}
    assert sorted(order.values()) == list(range(1, len(order) + 1))
    for c in report.consumers:
        for up in c.upstream:
            assert order[up] < order[c.id]
    assert [c.order for c in report.consumers] == sorted(order.values())
    assert {c.id: c.upstream for c in report.consumers}["growth/views/on_daily.sql"] == ["growth/views/daily.sql"]


def test_counts(report):
    assert report.counts == {
        s: sum(1 for v in EXPECTED.values() if v[0] == s) for s in ("rewrite", "escalate", "verify")}


def test_parallel_and_serial_agree(fleet, report):
    parallel = discover(load_campaign(fleet / "campaign.yaml"), workers=2)
    assert parallel.model_dump() == report.model_dump()


def test_cli_json_is_deterministic(fleet, capsys):
    assert main(["discover", str(fleet / "campaign.yaml"), "--json"]) == 0
    first = capsys.readouterr().out
    assert main(["discover", str(fleet / "campaign.yaml"), "--json"]) == 0
    assert capsys.readouterr().out == first
    data = json.loads(first)
    assert data["counts"]["escalate"] == sum(1 for v in EXPECTED.values() if v[0] == "escalate")


def test_cli_text(fleet, capsys):
    assert main(["discover", str(fleet / "campaign.yaml")]) == 0
    out = capsys.readouterr().out
    assert "campaign plays-v2: analytics.plays -> analytics_v2.plays" in out
    assert "growth/queries/star.sql" in out and "reason: uses dropped column(s) legacy_flag" in out
