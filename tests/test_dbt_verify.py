"""dbt as the verifier (issue 19): a patched dbt project's affected models and their
descendants are built with dbt in the sandbox warehouse and the project's own tests run on
them; a patch that breaks ``dbt build`` or a test is refuted.

Real material (tests/dbt_material.py): sushi_dbt from sqlmesh's sdist (seeds, incremental
models, custom generic tests) and airbnb from ade-bench's sdist, its raw tables rebuilt from
the same sdist's tasks/airbnb003/seeds (no reviews file ships: raw_reviews is an empty table
with the columns the project reads).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import duckdb
import pytest

import material
from dbt_material import project_root
from skein.dbt_build import DbtBuildResult, build_dbt_project
from skein.dbt_sandbox import DbtSandboxError, dbt_settings

pytestmark = pytest.mark.skipif(not dbt_settings().python.is_file() and not os.environ.get("CI"),
                                reason="no .venv-dbt (make setup creates it)")

SECRET = "TOPSECRET-9e2b7d"
REVENUE = "models/customer_revenue_by_day.sql"


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def sushi(tmp_path_factory) -> Path:
    return project_root("sushi", tmp_path_factory.mktemp("scratch"))


@pytest.fixture(scope="module")
def sushi_before(sushi) -> DbtBuildResult:
    return build_dbt_project(sushi, {}, ["customer_revenue_by_day"])


def patched(sushi: Path, old: str, new: str) -> dict[str, str]:
    text = (sushi / REVENUE).read_text(encoding="utf-8")
    assert old in text
    return {REVENUE: text.replace(old, new, 1)}


def test_sushi_builds_before_any_patch(sushi_before):
    assert sushi_before.parsed and not sushi_before.refuted, sushi_before.reason()
    assert "customer_revenue_by_day" in sushi_before.built_models()
    # the project's own custom generic tests ran on the model and passed
    assert {"less_than_amount_customer_revenue_by_day_1000__revenue",
            "greater_than_amount_customer_revenue_by_day_0__revenue"} <= set(
        sushi_before.passed_tests())
    assert {n.name for n in sushi_before.nodes if n.phase == "seed"} == {
        "items", "order_items", "orders"}


def test_sushi_patch_selecting_a_missing_column_is_refuted_naming_the_model(sushi):
    result = build_dbt_project(sushi, patched(sushi, "o.customer_id::INT AS customer_id",
                                              "o.no_such_column::INT AS customer_id"),
                               ["customer_revenue_by_day"])
    assert result.refuted
    bad = result.refuting()
    assert [(n.resource_type, n.name, n.status) for n in bad] == [
        ("model", "customer_revenue_by_day", "error")]
    assert "no_such_column" in bad[0].message
    assert "customer_revenue_by_day" in result.reason()
    # its tests did not run on a model that does not exist
    assert not result.passed_tests()


def test_sushi_patch_failing_the_projects_own_test_is_refuted_with_the_failures(sushi):
    result = build_dbt_project(sushi, patched(sushi, "SUM(ot.total)::DOUBLE AS revenue",
                                              "SUM(ot.total)::DOUBLE * 1000 AS revenue"),
                               ["customer_revenue_by_day"])
    assert result.refuted
    [failed] = result.refuting()
    assert failed.name == "less_than_amount_customer_revenue_by_day_1000__revenue"
    assert failed.status == "fail" and failed.failures and failed.failures > 0
    assert "customer_revenue_by_day" in result.built_models()


def test_sushi_harmless_patch_builds_and_tests_pass(sushi, sushi_before):
    before = tree_digest(sushi)
    result = build_dbt_project(sushi, patched(sushi, "SELECT\n  o.customer_id",
                                              "-- reviewed\nSELECT\n\n  o.customer_id"),
                               ["customer_revenue_by_day"])
    assert not result.refuted, result.reason()
    assert sorted(result.passed_tests()) == sorted(sushi_before.passed_tests())
    assert tree_digest(sushi) == before  # the consumer's tree is never written


@pytest.fixture(scope="module")
def airbnb_inputs(tmp_path_factory) -> Path:
    """The sources airbnb declares (main.raw_hosts, raw_listings, raw_reviews), rebuilt from
    the src_* solution CSVs of the same sdist by undoing the src models' renames."""
    seeds = material.ensure("ade-bench") / "tasks" / "airbnb003" / "seeds"
    database = tmp_path_factory.mktemp("airbnb") / "inputs.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE TABLE raw_hosts AS SELECT HOST_ID AS ID, HOST_NAME AS NAME, "
                    "IS_SUPERHOST, CREATED_AT, UPDATED_AT FROM read_csv(?)",
                    [str(seeds / "solution__src_hosts.csv")])
        con.execute("CREATE TABLE raw_listings AS SELECT LISTING_ID AS ID, LISTING_NAME AS NAME, "
                    "LISTING_URL, ROOM_TYPE, MINIMUM_NIGHTS, HOST_ID, PRICE_STR AS PRICE, "
                    "CREATED_AT, UPDATED_AT FROM read_csv(?)",
                    [str(seeds / "solution__src_listings.csv")])
        con.execute("CREATE TABLE raw_reviews (LISTING_ID BIGINT, DATE TIMESTAMP, "
                    "REVIEWER_NAME VARCHAR, COMMENTS VARCHAR, SENTIMENT VARCHAR)")
    return database


def test_airbnb_builds_from_its_sources_and_models_needing_dbt_utils_are_not_built(
        tmp_path, airbnb_inputs):
    root = project_root("airbnb", tmp_path)
    before = tree_digest(root)
    result = build_dbt_project(root, {}, ["src_hosts", "src_listings", "src_reviews"],
                               inputs=airbnb_inputs)
    assert not result.refuted, result.reason()
    assert {"src_hosts", "src_listings", "src_reviews", "dim_hosts", "dim_listings",
            "fct_reviews"} <= set(result.built_models())
    assert {"unique_dim_hosts_HOST_ID", "test_positive_values_dim_listings_MINIMUM_NIGHTS"} <= set(
        result.passed_tests())
    not_built = {n.name: n.message for n in result.not_built()}
    assert "dbt_utils is not installed" in not_built["dim_listings_hosts"]
    assert "monthly_agg_reviews" in not_built
    assert tree_digest(root) == before


def test_airbnb_patch_breaking_a_source_model_is_refuted(tmp_path, airbnb_inputs):
    root = project_root("airbnb", tmp_path)
    path = "models/source/src_hosts.sql"
    text = (root / path).read_text(encoding="utf-8").replace("NAME AS HOST_NAME",
                                                             "FULL_NAME AS HOST_NAME")
    result = build_dbt_project(root, {path: text}, ["src_hosts"], inputs=airbnb_inputs)
    assert [n.name for n in result.refuting()] == ["src_hosts"]
    skipped = {n.name for n in result.nodes if n.status == "skipped"}
    assert "dim_hosts" in skipped  # descendants are not built on a broken parent


HOSTILE = {
    "models/evil_read.sql": "select * from read_text('{secret_file}')",
    "models/evil_copy.sql": ("{{{{ config(pre_hook=\"COPY (SELECT 42 AS x) TO '{out}'\") }}}}\n"
                             "select 1 as x"),
    "models/evil_unlock.sql": ("{{{{ config(pre_hook=\"SET enable_external_access = true\") }}}}\n"
                               "select * from read_text('{secret_file}')"),
    # raised when the model runs (execute), not while dbt parses the project
    "models/evil_env.sql": ("{{% if execute %}}{{{{ exceptions.raise_compiler_error('saw:' ~ "
                            "env_var('SKEIN_TEST_SECRET', 'absent')) }}}}{{% endif %}}\n"
                            "select 1 as x"),
    "models/evil_python.py": ("def model(dbt, session):\n"
                              "    open('{marker}', 'w').write('ran')\n"
                              "    return session.sql('select 1 as x')\n"),
}


def test_hostile_models_fail_their_node_without_leaking(sushi, tmp_path, monkeypatch):
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    out, marker = tmp_path / "out.csv", tmp_path / "python-ran"
    monkeypatch.setenv("SKEIN_TEST_SECRET", SECRET)
    files = {p: t.format(secret_file=secret_file, out=out, marker=marker)
             for p, t in HOSTILE.items()}
    result = build_dbt_project(sushi, files, ["evil_read", "evil_copy", "evil_env",
                                              "evil_unlock", "evil_python"])
    by_name = {n.name: n for n in result.nodes}
    assert by_name["evil_read"].status == "error"
    assert "Permission Error" in by_name["evil_read"].message
    assert by_name["evil_copy"].status == "error"
    assert by_name["evil_unlock"].status == "error"  # the connection's configuration is locked
    assert "Cannot change configuration" in by_name["evil_unlock"].message
    assert "saw:absent" in by_name["evil_env"].message  # ran, and did not see the variable
    assert by_name["evil_python"].status == "not_built"
    assert "Python model" in by_name["evil_python"].message
    assert not out.exists() and not marker.exists()
    assert SECRET not in repr(result)
    assert result.refuted


def test_a_patched_file_outside_the_project_is_refused(sushi):
    with pytest.raises(DbtSandboxError, match="must lie inside the project"):
        build_dbt_project(sushi, {"../escape.sql": "select 1"}, ["customers"])


def test_a_patch_dbt_cannot_parse_is_refuted(sushi):
    result = build_dbt_project(sushi, {"models/schema.yml": "version: 2\nmodels: [\n"},
                               ["customer_revenue_by_day"])
    assert result.refuted and not result.parsed
    assert "cannot parse" in result.reason()


# The simulation (item 4): a dbt consumer in a fleet, migrated by the rule agent; its dry run
# builds the patched model with dbt on the dry run's data, baseline first.
WAREHOUSE = """
CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2;
CREATE TABLE analytics.plays (play_id BIGINT, user_id BIGINT, plan VARCHAR, ms_played BIGINT);
INSERT INTO analytics.plays VALUES (1, 10, 'free', 1000), (2, 10, 'free', 2000), (3, 11, 'paid', 500),
    (4, 12, 'paid', 700);
CREATE TABLE analytics_v2.plays AS
    SELECT play_id, user_id AS account_id, plan, CAST(ms_played / 1000 AS DECIMAL(12, 3)) AS duration_s
    FROM analytics.plays;
"""

MUSIC_DBT = {
    "dbt_project.yml": "name: music\nprofile: music\nmodel-paths: [models]\n",
    "profiles.yml": "music:\n  target: dev\n  outputs:\n    dev: {type: duckdb, schema: dbt}\n",
    "models/sources.yml": "version: 2\nsources:\n  - name: analytics\n    tables: [{name: plays}]\n"
                          "  - name: analytics_v2\n    tables: [{name: plays}]\n",
    "models/daily.sql": "select user_id, plan, count(*) as plays\n"
                        "from {{ source('analytics', 'plays') }}\ngroup by user_id, plan\n",
    "models/by_plan.sql": "select plan, sum(plays) as plays from {{ ref('daily') }} group by plan\n",
    "models/schema.yml": ("version: 2\nmodels:\n  - name: daily\n    columns:\n"
                          "      - name: user_id\n        data_tests: [not_null]\n"
                          "  - name: by_plan\n    columns:\n"
                          "      - name: plan\n        data_tests: [unique]\n"),
}

CAMPAIGN = """\
campaign: plays-v2
title: Move plays
owners: [data-platform]
warehouse: duckdb:///warehouse.duckdb
source: analytics.plays
target: analytics_v2.plays
columns:
  user_id: account_id
  ms_played: CAST(duration_s * 1000 AS BIGINT)
consumers:
  - repo: repos/*
"""

DAILY = "music-dbt/models/daily.sql"


@pytest.fixture(scope="module")
def music_fleet(tmp_path_factory) -> Path:
    from conftest import make_git_repo

    root = tmp_path_factory.mktemp("dbt-fleet")
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.execute(WAREHOUSE)
    make_git_repo(root / "repos" / "music-dbt", MUSIC_DBT)
    (root / "campaign.yaml").write_text(CAMPAIGN)
    return root


def test_simulation_records_the_dbt_build_of_a_patched_model(music_fleet, tmp_path):
    from conftest import rewritten
    from skein.pipeline import simulate_consumers, summarize
    from skein.spec import load_campaign

    ctx, ids = rewritten(load_campaign(music_fleet / "campaign.yaml"), tmp_path / "run")
    assert "analytics_v2" in ctx.results()[DAILY].text
    simulate_consumers(ctx, ids)
    daily = ctx.simulations()[DAILY]
    assert daily.status == "pass", daily.reason
    build = daily.dbt_build
    assert build["status"] == "passed", build
    assert {"daily", "by_plan"} <= set(build["built"])  # the model and its descendant
    assert build["tests_passed"] == 2 and not build["refuting"]
    assert build["seconds"] > 0

    # A patch the parity dry run cannot tell from the right one (Skein's renderer ignores
    # hooks) but dbt cannot build: refuted by the dbt verdict, naming the model.
    wrong = ctx.results()[DAILY].text.replace(
        "select", "{{ config(post_hook='select * from no_such_table') }}\nselect", 1)
    ctx.files.write_agent_result(DAILY, ctx.results()[DAILY].model_copy(update={"text": wrong}))
    assert simulate_consumers(ctx, ids)[DAILY] == "fail"
    daily = ctx.simulations()[DAILY]
    assert daily.dbt_build["status"] == "refuted"
    assert daily.reason.startswith("dbt build refuted the patch: model daily error")
    assert "no_such_table" in daily.reason
    assert daily.only_old == daily.only_new == 0  # parity itself held
    item = next(i for i in summarize(ctx).plan.items if i.id == DAILY)
    assert item.status == "failed"
    evidence = ctx.files.evidence_file(DAILY).read_text(encoding="utf-8")
    assert "## dbt build" in evidence and "**refuted**" in evidence
    assert "no\\_such\\_table" in evidence  # dbt's message as literal Markdown text


def test_dbt_build_off_or_dbt_missing_leaves_the_dry_run_to_parity(music_fleet, tmp_path,
                                                                    monkeypatch):
    """``simulation.dbt_build: false`` skips the builds; without a dbt interpreter the verdict
    is ``not run`` with the reason, and refutes nothing."""
    from conftest import rewritten
    from skein.pipeline import simulate_consumers
    from skein.spec import load_campaign

    off = music_fleet / "off.yaml"
    off.write_text(CAMPAIGN + "simulation:\n  dbt_build: false\n")
    ctx, ids = rewritten(load_campaign(off), tmp_path / "off")
    simulate_consumers(ctx, ids)
    assert ctx.simulations()[DAILY].status == "pass"
    assert ctx.simulations()[DAILY].dbt_build is None

    monkeypatch.setenv("SKEIN_DBT_PYTHON", str(tmp_path / "no-such-python"))
    ctx, ids = rewritten(load_campaign(music_fleet / "campaign.yaml"), tmp_path / "missing")
    simulate_consumers(ctx, ids)
    daily = ctx.simulations()[DAILY]
    assert daily.status == "pass"
    assert daily.dbt_build["status"] == "not run"
    assert "no dbt interpreter" in daily.dbt_build["reason"]
