"""A PostgreSQL warehouse end to end, against the real server on this machine.

The module creates its own database (``skein_test_<hex>``) and drops it at the end, even
when a test fails. CI starts the server (``.ci/run``); by hand:
``pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start``.
Set ``SKEIN_TEST_POSTGRES`` to another server URL (``postgresql://user@host:port``).
"""

from __future__ import annotations

import os
import textwrap
import uuid

import pytest

from conftest import make_git_repo, refute_patch, rewritten
from skein.errors import SkeinError, WarehouseError
from skein.warehouse import PostgresWarehouse, open_warehouse

psycopg2 = pytest.importorskip("psycopg2")

SERVER = os.environ.get("SKEIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")

WAREHOUSE = """
CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2;
CREATE TABLE analytics.users (user_id INTEGER PRIMARY KEY, country TEXT);
INSERT INTO analytics.users SELECT i, (ARRAY['se', 'fr', 'br', 'jp'])[1 + i % 4] FROM generate_series(0, 99) i;
CREATE TABLE analytics.plays (play_id BIGINT PRIMARY KEY, user_id INTEGER, track_id INTEGER,
                              played_at TIMESTAMP, ms_played BIGINT);
INSERT INTO analytics.plays
SELECT i, (i * 7) % 100, (i * 13) % 50, TIMESTAMP '2024-01-01' + i * INTERVAL '17 minutes',
       1000 * (i % 240) + (i * 37) % 1000
FROM generate_series(1, 2000) i;
CREATE TABLE analytics_v2.plays AS
SELECT play_id, user_id AS account_id, track_id, played_at,
       CAST(ms_played / 1000.0 AS NUMERIC(12, 3)) AS duration_s
FROM analytics.plays;
CREATE VIEW analytics.recent_plays AS
SELECT play_id, user_id, ms_played FROM analytics.plays WHERE played_at >= '2024-01-15';
COMMENT ON VIEW analytics.recent_plays IS 'owner=team-radio tier=2';
"""

GROWTH = {
    "CODEOWNERS": "* @team-growth\n",
    # Postgres syntax on purpose (::, string_agg ... ORDER BY): it runs transpiled in DuckDB.
    "reports/daily_minutes.sql": textwrap.dedent("""\
        SELECT played_at::date AS day, count(*) AS plays, sum(ms_played) / 60000.0 AS minutes
        FROM analytics.plays
        GROUP BY played_at::date
        """),
    "reports/country_listeners.sql": textwrap.dedent("""\
        SELECT u.country, count(DISTINCT p.user_id) AS listeners, sum(p.ms_played) AS ms
        FROM analytics.plays AS p
        JOIN analytics.users AS u ON u.user_id = p.user_id
        GROUP BY u.country
        """),
    "reports/track_lists.sql": textwrap.dedent("""\
        SELECT user_id, string_agg(track_id::text, ',' ORDER BY play_id) AS tracks
        FROM analytics.plays
        WHERE user_id < 20
        GROUP BY user_id
        """),
    "models/user_totals.sql": textwrap.dedent("""\
        CREATE VIEW reports.user_totals AS
        SELECT user_id, count(*) AS plays, sum(ms_played) AS ms
        FROM analytics.plays
        GROUP BY user_id
        """),
    "reports/top_users.sql": "SELECT user_id, plays FROM reports.user_totals ORDER BY plays DESC, user_id LIMIT 10\n",
    "reports/countries.sql": "SELECT country, count(*) AS users FROM analytics.users GROUP BY country\n",
}

CAMPAIGN = """\
campaign: {id}
title: Plays v2 on PostgreSQL
owners: [data-platform]
warehouse: {url}
source: analytics.plays
target: {target}
columns:
  user_id: account_id
  ms_played: CAST(duration_s * 1000 AS BIGINT)
{forward}consumers:
  - repo: ../repos/*
  - warehouse_views: true
simulation:
  sample_rows: 500
  sample_keys:
    analytics.plays: [user_id]
    analytics.users: [user_id]
"""

# The target as a forward query in the campaign's dialect, simulated before
# analytics_v3.plays exists. DuckDB has no to_char: it only runs transpiled.
FORWARD = """\
forward: |
  SELECT play_id, user_id AS account_id, track_id, played_at,
         (ms_played / 1000.0)::numeric(12, 3) AS duration_s,
         to_char(played_at, 'YYYY-MM-DD') AS play_day
  FROM analytics.plays
"""

IMPACTED = {  # id -> (status, level)
    "growth/reports/daily_minutes.sql": ("rewrite", 1),
    "growth/reports/country_listeners.sql": ("rewrite", 1),
    "growth/reports/track_lists.sql": ("rewrite", 1),
    "growth/models/user_totals.sql": ("rewrite", 1),
    "growth/reports/top_users.sql": ("verify", 2),
    "warehouse/analytics.recent_plays": ("rewrite", 1),
}


def _admin():
    try:
        con = psycopg2.connect(f"{SERVER}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {SERVER} is not reachable ({str(exc).strip()}); start it with "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    con.autocommit = True
    return con


@pytest.fixture(scope="module")
def database():
    """A fresh database for this module, dropped at the end whatever happens."""
    name = f"skein_test_{uuid.uuid4().hex}"
    admin = _admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        url = f"{SERVER}/{name}"
        con = psycopg2.connect(url)
        try:
            with con, con.cursor() as cur:
                cur.execute(WAREHOUSE)
        finally:
            con.close()
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def fleet(database, tmp_path_factory):
    root = tmp_path_factory.mktemp("pg-fleet")
    make_git_repo(root / "repos" / "growth", GROWTH)
    (root / "campaigns").mkdir()
    existing = root / "campaigns" / "plays-v2.yaml"
    existing.write_text(CAMPAIGN.format(id="pg-plays-v2", url=database, target="analytics_v2.plays",
                                        forward=""))
    forward = root / "campaigns" / "plays-v3.yaml"
    forward.write_text(CAMPAIGN.format(id="pg-plays-v3", url=database, target="analytics_v3.plays",
                                       forward=FORWARD))
    return {"url": database, "existing": existing, "forward": forward}


def test_schemas_and_views(database):
    warehouse = open_warehouse(database)
    assert isinstance(warehouse, PostgresWarehouse)
    assert (warehouse.dialect, warehouse.default_schema) == ("postgres", "public")
    schemas = warehouse.schemas()
    assert sorted(schemas) == ["analytics.plays", "analytics.recent_plays", "analytics.users",
                               "analytics_v2.plays"]  # user schemas only, views included
    assert list(schemas["analytics.plays"]) == ["play_id", "user_id", "track_id", "played_at", "ms_played"]
    assert schemas["analytics.plays"]["ms_played"] == "bigint"
    assert list(schemas["analytics_v2.plays"])[1] == "account_id"
    [view] = warehouse.views()
    assert view.name == "analytics.recent_plays" and view.comment == "owner=team-radio tier=2"
    assert view.sql.startswith('CREATE VIEW "analytics"."recent_plays" AS') and "analytics.plays" in view.sql
    assert warehouse.row_count("analytics.plays") == 2000


def test_read_gives_typed_arrow_even_when_empty(database):
    import pyarrow as pa

    warehouse = open_warehouse(database)
    table = warehouse.read("SELECT * FROM analytics_v2.plays ORDER BY play_id LIMIT 2")
    assert table.schema.types == [pa.int64(), pa.int32(), pa.int32(), pa.timestamp("us"),
                                  pa.decimal128(12, 3)]
    assert table.column("duration_s").to_pylist()[0].as_tuple().exponent == -3
    empty = warehouse.read("SELECT * FROM analytics_v2.plays WHERE false")
    assert empty.num_rows == 0 and empty.schema == table.schema


def test_sampling_sql_runs_in_postgres_and_keeps_join_partners(database):
    from skein.simulation.worlds import sample_query

    warehouse = open_warehouse(database)
    plays = warehouse.read(sample_query("analytics.plays", 2000, 500, ["user_id"], 4, "postgres"))
    users = warehouse.read(sample_query("analytics.users", 2000, 50, ["user_id"], 4, "postgres"))
    v2 = warehouse.read(sample_query("analytics_v2.plays", 2000, 500, ["account_id"], 4, "postgres"))
    assert 0 < plays.num_rows < 2000
    assert set(plays.column("user_id").to_pylist()) <= set(users.column("user_id").to_pylist())
    # The target, sampled on the renamed key, keeps exactly the same plays.
    assert sorted(plays.column("play_id").to_pylist()) == sorted(v2.column("play_id").to_pylist())
    whole_rows = warehouse.read(sample_query("analytics.users", 100, 10, None, 4, "postgres"))
    pair = warehouse.read(sample_query("analytics.plays", 2000, 10, ["user_id", "track_id"], 4, "postgres"))
    assert 0 < whole_rows.num_rows < 100 and 0 < pair.num_rows < 2000


def test_discover_finds_repo_consumers_and_the_postgres_view(fleet):
    from skein.discovery import discover
    from skein.spec import load_campaign

    report = discover(load_campaign(fleet["existing"]), workers=1)
    found = {c.id: (c.status, c.level) for c in report.consumers}
    assert found == IMPACTED, [(c.id, c.status, c.reason) for c in report.consumers]
    by_id = {c.id: c for c in report.consumers}
    view = by_id["warehouse/analytics.recent_plays"]
    assert (view.kind, view.owner, view.tier, view.dialect) == ("view", "team-radio", 2, "postgres")
    assert view.columns == ["ms_played", "play_id", "played_at", "user_id"]
    assert by_id["growth/reports/daily_minutes.sql"].owner == "team-growth"
    assert by_id["growth/reports/country_listeners.sql"].columns == ["ms_played", "user_id"]
    assert by_id["growth/reports/top_users.sql"].upstream == ["growth/models/user_totals.sql"]


def simulated(campaign, out):
    from skein.pipeline import simulate_consumers

    ctx, ids = rewritten(campaign, out)
    simulate_consumers(ctx, ids)
    return ctx, ctx.simulations()


def test_plan_dry_runs_every_patch_on_postgres_data(fleet, tmp_path):
    from skein.rewrite.request import Patch
    from skein.spec import load_campaign

    campaign = load_campaign(fleet["existing"])
    ctx, simulations = simulated(campaign, tmp_path)
    patched = {cid for cid, r in ctx.results().items() if isinstance(r, Patch)}
    assert patched == {cid for cid, (status, _) in IMPACTED.items() if status == "rewrite"}, ctx.results()
    assert set(simulations) == set(IMPACTED)
    for cid, simulation in simulations.items():
        assert simulation.status == "pass", (cid, simulation.reason, simulation.samples)
        assert simulation.old_rows == simulation.new_rows and simulation.old_rows > 0
    # Sampled by user id in Postgres: 4 buckets of the 2000 plays, every user kept (100 <= 500).
    assert simulations["growth/reports/country_listeners.sql"].old_rows == 4
    recent = simulations["warehouse/analytics.recent_plays"].old_rows
    assert recent < warehouse_count(fleet["url"], "SELECT count(*) FROM analytics.recent_plays")


def warehouse_count(url: str, sql: str) -> int:
    return open_warehouse(url).read(sql).column(0)[0].as_py()


def test_forward_query_in_postgres_dialect_builds_the_target(fleet, tmp_path):
    from skein.spec import load_campaign

    campaign = load_campaign(fleet["forward"])
    assert campaign.sql_dialect == "postgres"
    _, simulations = simulated(campaign, tmp_path)
    assert set(simulations) == set(IMPACTED)
    assert all(s.status == "pass" for s in simulations.values()), \
        {cid: s.reason for cid, s in simulations.items() if s.status != "pass"}


def test_simulation_refutes_a_wrong_patch_on_postgres_data(fleet, tmp_path):
    from skein.rewrite.request import Patch
    from skein.spec import load_campaign

    ctx, _ = rewritten(load_campaign(fleet["existing"]), tmp_path)
    victim = "growth/reports/country_listeners.sql"
    patch = ctx.results()[victim]
    assert isinstance(patch, Patch) and "account_id" in patch.text
    refute_patch(ctx, victim, patch.text.replace("account_id", "track_id"))


def test_unreachable_server_is_a_clear_error(tmp_path):
    from skein.discovery import discover
    from skein.spec import load_campaign

    url = "postgresql://someone:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(WarehouseError) as caught:
        open_warehouse(url)
    message = str(caught.value)
    assert "postgresql://someone@127.0.0.1:1/nowhere" in message and "cannot connect" in message
    assert "s3cret" not in message
    campaign = tmp_path / "c.yaml"
    campaign.write_text(CAMPAIGN.format(id="down", url=url, target="analytics_v2.plays", forward=""))
    with pytest.raises(SkeinError) as caught:
        discover(load_campaign(campaign))
    assert "warehouse" in str(caught.value) and "s3cret" not in str(caught.value)


def test_a_forward_query_duckdb_cannot_run_names_the_field(fleet, tmp_path):
    from skein.spec import load_campaign

    text = fleet["forward"].read_text().replace("AS play_day", "AS play_day, nosuchfn(track_id) AS x")
    broken = fleet["forward"].parent / "broken-forward.yaml"
    broken.write_text(text.replace("campaign: pg-plays-v3", "campaign: pg-plays-broken"))
    campaign = load_campaign(broken)
    with pytest.raises(SkeinError, match=r"broken-forward.yaml:\d+: forward: does not run"):
        simulated(campaign, tmp_path / "plan")
