"""The demo fleet: deterministic, real repositories, runnable SQL, a consistent oracle.

The ground truth is declared by hand in the templates; these tests check those
declarations against things that do not share them: DuckDB running every query, DuckDB's
optimizer reporting which plays columns it reads, and sqlglot naming the tables.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import duckdb
import pytest
import sqlglot
import yaml
from sqlglot import exp

from skein.demo import build_demo_fleet, plan_fleet
from skein.demo.fleet import FAMILIES
from skein.demo.model import BASE_COLUMNS, PLAYS_COLUMNS, REPOS, SOURCE
from skein.demo.warehouse_data import FORWARD_SQL, ROWS
from skein.errors import SkeinError

SEED = 7


@pytest.fixture(scope="module")
def fleet40(tmp_path_factory) -> Path:
    """The default fleet (40 consumers), built once for the module."""
    out = tmp_path_factory.mktemp("fleet40")
    build_demo_fleet(out, consumers=40, seed=SEED)
    return out


@pytest.fixture(scope="module")
def fleet1000(tmp_path_factory) -> Path:
    """A larger fleet where every template variant appears."""
    out = tmp_path_factory.mktemp("fleet1000")
    build_demo_fleet(out, consumers=1000, seed=SEED)
    return out


def truth(out: Path) -> dict:
    """The fleet's ground_truth.json."""
    return json.loads((out / "ground_truth.json").read_text())


def git(repo: Path, *args: str) -> str:
    """Output of a read-only git command in ``repo``."""
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def files_outside_git(out: Path) -> dict[str, bytes]:
    """Every file of the fleet but git's internals and the DuckDB file."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(out).parts
            and p.name != "warehouse.duckdb"}


def warehouse_digest(path: Path) -> dict[str, str]:
    """What the warehouse holds: columns and types, rows of tables, views' SQL, comments."""
    con = duckdb.connect(str(path), read_only=True)
    digest = {}
    for schema, name, kind in con.execute(
            "SELECT table_schema, table_name, table_type FROM information_schema.tables "
            "ORDER BY 1, 2").fetchall():
        cols = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                           [schema, name]).fetchall()
        rows = con.execute(f"SELECT * FROM {schema}.{name} ORDER BY ALL").fetchall() \
            if kind == "BASE TABLE" else []
        digest[f"{schema}.{name}"] = hashlib.sha256(repr((kind, cols, rows)).encode()).hexdigest()
    for schema, name, sql, comment in con.execute(
            "SELECT schema_name, view_name, sql, comment FROM duckdb_views() "
            "WHERE NOT internal").fetchall():
        digest[f"view {schema}.{name}"] = repr((sql, comment))
    con.close()
    return digest


# -- determinism -----------------------------------------------------------------------

def test_same_seed_gives_identical_fleets(fleet40, tmp_path):
    """Same arguments: same bytes, same commits, same warehouse contents."""
    again = tmp_path / "again"
    build_demo_fleet(again, consumers=40, seed=SEED)
    assert files_outside_git(again) == files_outside_git(fleet40)
    for repo in REPOS:  # pinned identities and dates: even the commit hashes agree
        assert git(again / "repos" / repo, "rev-parse", "HEAD") == \
            git(fleet40 / "repos" / repo, "rev-parse", "HEAD")
    assert warehouse_digest(again / "warehouse.duckdb") == \
        warehouse_digest(fleet40 / "warehouse.duckdb")


def test_other_seed_gives_other_fleet(fleet40, tmp_path):
    """The seed changes parameters and data."""
    other = tmp_path / "other"
    build_demo_fleet(other, consumers=40, seed=SEED + 1)
    assert files_outside_git(other) != files_outside_git(fleet40)
    a, b = (warehouse_digest(o / "warehouse.duckdb") for o in (fleet40, other))
    assert a["analytics.plays"] != b["analytics.plays"]


def test_rebuild_in_place_and_refuse_foreign_folder(tmp_path):
    """An earlier fleet is replaced; any other non-empty folder is left alone."""
    build_demo_fleet(tmp_path / "f", consumers=5, seed=1)
    build_demo_fleet(tmp_path / "f", consumers=5, seed=1)  # an earlier fleet is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SkeinError, match="not a demo fleet"):
        build_demo_fleet(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# -- repositories ----------------------------------------------------------------------

def test_repos_are_git_repos_with_every_consumer_tracked(fleet40):
    """Real repositories: clean, two pinned commits, every consumer tracked."""
    specs = plan_fleet(40, SEED)
    for repo in REPOS:
        root = fleet40 / "repos" / repo
        tracked = set(git(root, "ls-files").split())
        wanted = {s.path for s in specs if s.repo == repo}
        assert wanted and wanted <= tracked, repo
        assert git(root, "status", "--porcelain") == ""
        log = git(root, "log", "--format=%an|%ad|%cd", "--date=iso-strict").splitlines()
        assert len(log) == 2 and all("2024-0" in line for line in log)
    # Ignored files mentioning the source are on disk but not consumers.
    dbt = fleet40 / "repos" / "music-dbt"
    assert (dbt / "target/compiled/music/models/staging/stg_plays.sql").exists()
    assert not any(p.startswith("target/") for p in git(dbt, "ls-files").split())
    assert "scratch/try.local.sql" not in git(fleet40 / "repos" / "sandbox", "ls-files")


def test_ownership_files(fleet40):
    """catalog-info.yaml (with a subfolder override), CODEOWNERS, nothing, dbt project."""
    repos = fleet40 / "repos"
    root = yaml.safe_load((repos / "finance-reporting/catalog-info.yaml").read_text())
    sub = yaml.safe_load((repos / "finance-reporting/treasury/catalog-info.yaml").read_text())
    assert (root["apiVersion"], root["kind"]) == ("backstage.io/v1alpha1", "Component")
    assert root["metadata"]["annotations"] == {"skein/tier": "1", "skein/dialect": "snowflake"}
    assert (root["spec"]["owner"], sub["spec"]["owner"]) == ("team-finance", "team-treasury")
    assert "* @team-legacy" in (repos / "legacy-scripts/CODEOWNERS").read_text()
    assert not list((repos / "sandbox").rglob("catalog-info.yaml"))
    assert not (repos / "sandbox/CODEOWNERS").exists()
    project = yaml.safe_load((repos / "music-dbt/dbt_project.yml").read_text())
    assert project["model-paths"] == ["models"] and project["vars"]["min_ms_played"] == 30000


# -- warehouse -------------------------------------------------------------------------

def test_warehouse_tables(fleet40):
    """Row counts, the plays schema, and the target built by the forward SQL."""
    con = duckdb.connect(str(fleet40 / "warehouse.duckdb"), read_only=True)
    for table, n in ROWS.items():
        assert con.execute(f"SELECT count(*) FROM analytics.{table}").fetchone()[0] == n
    assert con.execute("SELECT count(*) FROM staging.plays").fetchone()[0] == ROWS["plays"] // 10
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_schema = 'analytics' AND table_name = 'plays'"
                             ).fetchall())
    assert types == {"play_id": "BIGINT", "user_id": "BIGINT", "track_id": "BIGINT",
                     "played_at": "TIMESTAMP", "ms_played": "BIGINT", "country": "VARCHAR",
                     "device": "VARCHAR", "legacy_flag": "BOOLEAN"}
    for table, columns in BASE_COLUMNS.items():
        got = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        assert got == list(columns), table
    target = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_schema = 'analytics_v2' AND table_name = 'plays'"
                              ).fetchall())
    assert target["duration_s"] == "DECIMAL(12,3)" and target["country_code"].startswith("ENUM(")
    assert "legacy_flag" not in target and "account_id" in target
    # The campaign's column mapping inverts the forward SQL on every row.
    assert con.execute("""
        SELECT count(*) FROM analytics_v2.plays AS n JOIN analytics.plays AS o USING (play_id)
        WHERE n.account_id <> o.user_id OR CAST(n.duration_s * 1000 AS BIGINT) <> o.ms_played
           OR CAST(n.country_code AS VARCHAR) <> o.country""").fetchone()[0] == 0
    assert con.execute("SELECT count(DISTINCT legacy_flag), count(*) FILTER (plays.country <> "
                       "u.country) > 0 FROM analytics.plays JOIN analytics.users AS u "
                       "USING (user_id)").fetchone() == (2, True)


def test_produced_datasets_are_in_the_warehouse_with_declared_columns(fleet40):
    """What consumers produce is deployed, with the columns their lineage declares."""
    con = duckdb.connect(str(fleet40 / "warehouse.duckdb"), read_only=True)
    views = {f"{s}.{v}": c for s, v, c in con.execute(
        "SELECT schema_name, view_name, comment FROM duckdb_views() WHERE NOT internal"
    ).fetchall()}
    for spec in plan_fleet(40, SEED):
        if spec.produces:
            name = spec.produces.name
            cols = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
            assert cols == list(spec.produces.lineage), spec.id
            assert (name in views) == (spec.produces.materialized == "view"), spec.id
            if spec.kind == "view":
                assert views[name] == spec.comment
    # Every view is a consumer's product: no stray views that discovery would list.
    assert set(views) == {s.produces.name for s in plan_fleet(40, SEED)
                          if s.produces and s.produces.materialized == "view"}


# -- coverage --------------------------------------------------------------------------

def test_every_family_and_behaviour_at_40(fleet40):
    """The default fleet already shows every family and the behaviours discovery must handle."""
    specs = plan_fleet(40, SEED)
    assert {s.family for s in specs} == {f.name for f in FAMILIES}
    assert len(FAMILIES) <= 40
    gt = truth(fleet40)
    items = gt["consumers"].values()
    assert {c["level"] for c in items} == {1, 2, 3}
    assert {c["status"] for c in items} == {"rewrite", "escalate", "verify"}
    assert {c["kind"] for c in items} == {"sql", "dbt_model", "view"}
    assert {c["dialect"] for c in items} == {"duckdb", "snowflake", "bigquery"}
    assert {s.repo for s in specs} == set(REPOS) | {None}
    assert {c["owner"] for c in items} >= {"team-growth", "team-finance", "team-treasury",
                                           "team-marketing", "team-data-eng", "team-legacy",
                                           "unowned", "team-bi"}
    assert any(c["status"] == "escalate" and c["level"] > 1 for c in items)
    assert any(c["columns"] == [] and c["impact"] == "direct" and c["status"] == "rewrite"
               for c in items)
    variants = {(s.family, s.variant) for s in specs}
    for wanted in [("cte_unused", "unused_column"), ("in_subquery", "in_and_scalar"),
                   ("join_collision", "collision_0"), ("dbt_staging", "incremental"),
                   ("dbt_staging", "identifier_alias"), ("mart_reader", "dbt_analysis"),
                   ("legacy_ctas", "ctas"), ("unrelated", "view")]:
        assert wanted in variants
    assert len(gt["unparseable"]) == 2 and len(set(gt["unparseable"]) & set(gt["consumers"])) == 1
    texts = " ".join(s.text for s in specs)
    for feature in ("CREATE OR REPLACE VIEW", "CREATE VIEW", "CREATE TABLE", "QUALIFY",
                    "USING (", "EXISTS (", "IN (\n", "GROUP BY 1, 2", '"analytics"."plays"',
                    "SELECT *", "p.*", "`acme-prod.analytics.plays`", "PROD.ANALYTICS.PLAYS",
                    "{{ source(", "{{ ref(", "schema='marts'", "{% if is_incremental() %}",
                    "ms_to_seconds(", "staging.plays", "EXCEPT (legacy_flag)"):
        assert feature in texts, feature


# -- the SQL is real -------------------------------------------------------------------

def test_duckdb_consumers_run(fleet40, tmp_path):
    """Every duckdb consumer (dbt ones rendered) runs; producers re-create what they make."""
    db = tmp_path / "copy.duckdb"
    shutil.copy(fleet40 / "warehouse.duckdb", db)
    con = duckdb.connect(str(db))
    ran = 0
    for spec in plan_fleet(40, SEED):
        if not spec.parses or spec.dialect != "duckdb":
            continue
        if spec.kind == "sql" and spec.produces:
            what = "VIEW" if spec.produces.materialized == "view" else "TABLE"
            con.execute(f"DROP {what} {spec.produces.name}")
            con.execute(spec.deploy or spec.rendered)
            con.execute(f"SELECT * FROM {spec.produces.name}").fetchall()
        else:  # views' bodies, dbt models rendered, plain queries
            con.execute(spec.rendered).fetchall()
        ran += 1
    assert ran >= 30


def _strip_catalogs(tree: exp.Expression) -> exp.Expression:
    """Drop the project/database part (``acme-prod``, ``PROD``) the warehouse lacks."""
    for table in tree.find_all(exp.Table):
        table.set("catalog", None)
    return tree


def test_snowflake_and_bigquery_consumers_parse_transpile_and_run(fleet40):
    """Other dialects parse in their dialect and run once transpiled to DuckDB."""
    con = duckdb.connect(str(fleet40 / "warehouse.duckdb"), read_only=True)
    other = [s for s in plan_fleet(40, SEED) if s.dialect in ("snowflake", "bigquery")]
    assert {s.dialect for s in other} == {"snowflake", "bigquery"}
    for spec in other:
        tree = _strip_catalogs(sqlglot.parse_one(spec.text, read=spec.dialect))
        con.execute(tree.sql("duckdb")).fetchall()


def test_unparseable_consumers_do_not_parse(fleet1000):
    """The deliberately broken files fail in sqlglot and DuckDB alike."""
    specs = [s for s in plan_fleet(1000, SEED) if not s.parses]
    assert {s.variant for s in specs} == {"mentions", "other"}
    con = duckdb.connect(str(fleet1000 / "warehouse.duckdb"), read_only=True)
    for spec in specs:
        with pytest.raises(sqlglot.errors.ParseError):
            sqlglot.parse(spec.text, read=spec.dialect)
        with pytest.raises(duckdb.Error):
            con.execute(spec.text)
        assert ("analytics.plays" in spec.text) == spec.mentions_source
        assert spec.mentions_source or "plays" not in spec.text


def test_declared_tables_are_the_tables_the_sql_names(fleet1000):
    """Each declaration's datasets are the schema-qualified tables sqlglot finds."""
    specs = plan_fleet(1000, SEED)
    columns = {**BASE_COLUMNS, **{s.produces.name: s.produces.lineage for s in specs
                                  if s.produces}}
    for spec in specs:
        if not spec.parses:
            continue
        tree = sqlglot.parse_one(spec.rendered or spec.text, read=spec.dialect)
        named = {f"{t.db}.{t.name}".lower() for t in tree.find_all(exp.Table) if t.db}
        named.discard(spec.produces.name if spec.produces else None)
        assert named == set(spec.reads), spec.id
        for dataset, cols in spec.reads.items():
            assert set(cols) <= set(columns[dataset]), (spec.id, dataset)


def _plays_columns_scanned(con, sql: str) -> tuple[set[str], bool]:
    """The analytics.plays columns DuckDB's optimizer reads for ``sql`` (projection
    pushdown plus pushed-down filters), and whether it scans plays at all."""
    plan = json.loads(con.execute("EXPLAIN (FORMAT json) " + sql).fetchall()[0][1])
    cols, found, todo = set(), False, list(plan)
    while todo:
        node = todo.pop()
        todo.extend(node.get("children", []))
        info = node.get("extra_info", {})
        if isinstance(info, dict) and str(info.get("Table", "")).endswith("analytics.plays"):
            found = True
            proj = info.get("Projections", [])
            cols |= set(proj.split("\n") if isinstance(proj, str) else proj)
            cols |= set(re.findall(r"[a-z_]+", json.dumps(info.get("Filters", "")))) \
                & set(PLAYS_COLUMNS)
    return cols & set(PLAYS_COLUMNS), found


def test_direct_columns_agree_with_duckdbs_optimizer(fleet1000):
    """Touched columns = what DuckDB must read; transitive columns are a subset of it
    (filters of the views in between are read but are not value lineage)."""
    gt = truth(fleet1000)["consumers"]
    con = duckdb.connect(str(fleet1000 / "warehouse.duckdb"), read_only=True)
    checked = 0
    for spec in plan_fleet(1000, SEED):
        if spec.id not in gt or not spec.parses or spec.dialect != "duckdb":
            continue
        sql = spec.rendered
        if spec.kind == "sql" and spec.produces:  # the query part of the DDL / INSERT
            sql = re.split(r"\)\n|\bAS\n", sql, maxsplit=1)[1]
        cols, scans_plays = _plays_columns_scanned(con, sql)
        want = set(gt[spec.id]["columns"])
        if gt[spec.id]["level"] == 1:
            assert cols == want, spec.id
        elif scans_plays:
            assert want <= cols, spec.id
        checked += 1
    assert checked > 500


# -- the oracle ------------------------------------------------------------------------

def test_ground_truth_is_consistent(fleet1000):
    """The oracle obeys the doc's rules on its own fields."""
    gt = truth(fleet1000)
    specs = {s.id: s for s in plan_fleet(1000, SEED)}
    assert (gt["campaign"], gt["source"]) == ("plays-v2", SOURCE)
    assert set(gt["consumers"]).isdisjoint(gt["unaffected"])
    assert set(gt["consumers"]) | set(gt["unaffected"]) == set(specs)
    assert gt["unaffected"] == sorted(gt["unaffected"])
    assert set(gt["unparseable"]) == {i for i, s in specs.items() if not s.parses}
    level_of_product = {c["produces"]: c["level"] for c in gt["consumers"].values()
                        if c["produces"]}
    for cid, c in gt["consumers"].items():
        spec = specs[cid]
        assert set(c) == {"kind", "impact", "level", "status", "columns", "produces", "owner",
                          "tier", "dialect"}
        assert c["impact"] == ("direct" if c["level"] == 1 else "transitive")
        assert c["columns"] == sorted(set(c["columns"])) and set(c["columns"]) <= set(PLAYS_COLUMNS)
        escalate = cid in gt["unparseable"] or "legacy_flag" in c["columns"]
        assert c["status"] == ("escalate" if escalate else
                               "rewrite" if c["level"] == 1 else "verify"), cid
        if c["kind"] == "view":
            assert cid == f"warehouse/{c['produces']}" and c["dialect"] == "duckdb"
        else:
            assert cid.startswith(f"{spec.repo}/")
        assert c["tier"] is None or isinstance(c["tier"], int)
        upstream = [level_of_product[d] for d in spec.reads if d in level_of_product]
        if c["level"] > 1:  # reads only products of the level just below
            assert SOURCE not in spec.reads and set(upstream) == {c["level"] - 1}, cid
    for cid in gt["unaffected"]:
        assert SOURCE not in specs[cid].reads and not specs[cid].mentions_source
        assert not any(d in level_of_product for d in specs[cid].reads), cid


def test_scaling_to_1000(fleet1000):
    """Families repeat evenly and every product gets its own name."""
    specs = plan_fleet(1000, SEED)
    gt = truth(fleet1000)
    assert len(gt["consumers"]) + len(gt["unaffected"]) == 1000
    per_family = Counter(s.family for s in specs)
    assert set(per_family.values()) <= {1000 // len(FAMILIES), math.ceil(1000 / len(FAMILIES))}
    products = [s.produces.name for s in specs if s.produces]
    assert len(products) == len(set(products))
    assert max(c["level"] for c in gt["consumers"].values()) == 3
    on_disk = sum(1 for repo in REPOS for p in (fleet1000 / "repos" / repo).rglob("*.sql")
                  if ".git" not in p.parts)
    # +2: the ignored dbt target/ file and the sandbox's *.local.sql file, +1 the macro.
    assert on_disk == sum(1 for s in specs if s.repo) + 3


def test_campaign_file(fleet40):
    """The campaign has the documented shape and its forward SQL builds the target."""
    path = fleet40 / "campaigns" / "plays-v2.yaml"
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["campaign", "title", "description", "owners", "warehouse", "source",
                         "target", "columns", "forward", "consumers", "rollout"]
    assert doc["columns"] == {"user_id": "account_id",
                              "ms_played": "CAST(duration_s * 1000 AS BIGINT)",
                              "country": "CAST(country_code AS VARCHAR)", "legacy_flag": None}
    assert doc["consumers"] == [{"repo": "../repos/*", "dialect": "duckdb"},
                                {"warehouse_views": True}]
    assert doc["rollout"]["waves"][-1] == {"name": "everyone", "share": 1.0}
    warehouse = (path.parent / doc["warehouse"].removeprefix("duckdb:///")).resolve()
    assert warehouse == (fleet40 / "warehouse.duckdb").resolve()
    assert doc["forward"] == FORWARD_SQL
    con = duckdb.connect(str(warehouse), read_only=True)
    built = f"SELECT * FROM ({doc['forward']})"
    assert con.execute(f"{built} EXCEPT SELECT * FROM analytics_v2.plays").fetchall() == []
    assert con.execute(f"SELECT count(*) FROM ({built})").fetchone()[0] == ROWS["plays"]
