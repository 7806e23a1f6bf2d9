"""Expectations on new outputs: specs from the old output's profile, the dbt contract and
the campaign, validated with GX Core; failures reach the simulation evidence."""

from __future__ import annotations

import textwrap

import pyarrow as pa
import pytest

from skein.simulation.expectations import (ExpectationSpec, campaign_expectations,
                                           dbt_expectations, profile_expectations, validate)
from skein.spec import Campaign

OLD = pa.table({
    "user_id": pa.array([1, 2, 3, 4], pa.int64()),
    "plan": ["free", "paid", "free", None],
    "amount": pa.array(["1.50", "2.00", "3.25", "0.00"], pa.string()).cast(pa.decimal128(12, 2)),
    "ms": [10.5, 20.0, None, 5.25],
})


def _failed(result) -> list[tuple[str, str | None]]:
    return [(r["type"], r["kwargs"].get("column")) for r in result.failed]


def _with(table: pa.Table, column: str, values) -> pa.Table:
    index = table.column_names.index(column)
    return table.set_column(index, column, pa.array(values, table.schema.field(column).type))


def test_profile_suite_passes_on_identical_data():
    specs = profile_expectations(OLD)
    result = validate(specs, OLD)
    assert result.passed, result.failed
    assert [r["type"] for r in result.results] == [s.type for s in specs]  # in spec order
    assert {r["origin"] for r in result.results} == {"profile"}
    assert result.results[1]["observed"] == 4  # row count


@pytest.mark.parametrize("column, values, failed", [
    ("user_id", [1, None, 3, 4], ("ExpectColumnValuesToNotBeNull", "user_id")),
    ("plan", ["free", "gold", "free", None], ("ExpectColumnValuesToBeInSet", "plan")),
    ("ms", [10.5, 99.0, None, 5.25], ("ExpectColumnValuesToBeBetween", "ms")),
])
def test_profile_suite_fails_on_changed_data(column, values, failed):
    result = validate(profile_expectations(OLD), _with(OLD, column, values))
    assert not result.passed
    assert _failed(result) == [failed]


def test_profile_decimal_range_and_row_count():
    changed = _with(OLD, "amount", [OLD["amount"][0].as_py(), None, None, OLD["amount"][0].as_py() * 100])
    result = validate(profile_expectations(OLD), changed)
    assert set(_failed(result)) == {("ExpectColumnValuesToNotBeNull", "amount"),
                                    ("ExpectColumnValuesToBeBetween", "amount")}
    assert _failed(validate(profile_expectations(OLD), OLD.slice(0, 3))) == \
        [("ExpectTableRowCountToEqual", None)]


def test_profile_leaves_out_floats_and_wide_columns_from_value_sets():
    wide = pa.table({"id": list(range(30)), "x": [0.5] * 30})
    types = [(s.type, s.kwargs.get("column")) for s in profile_expectations(wide)]
    assert ("ExpectColumnValuesToBeInSet", "id") not in types
    assert ("ExpectColumnValuesToBeInSet", "x") not in types
    assert ("ExpectColumnValuesToBeBetween", "id") in types


def test_unknown_types_and_bad_arguments_fail_clearly():
    specs = [ExpectationSpec(type="ExpectColumnToBeNice", kwargs={"column": "plan"}),
             ExpectationSpec(type="ExpectColumnValuesToNotBeNull", kwargs={"col": "plan"}),
             ExpectationSpec(type="ExpectColumnValuesToNotBeNull", kwargs={"column": "nope"}),
             ExpectationSpec(type="ExpectColumnValuesToNotBeNull", kwargs={"column": "USER_ID"})]
    result = validate(specs, OLD)
    assert [r["success"] for r in result.results] == [False, False, False, True]
    observed = [r["observed"] for r in result.results]
    assert "unknown expectation type 'ExpectColumnToBeNice'" in observed[0]
    assert observed[1].startswith("bad arguments:") and "column" in observed[1]
    assert observed[2].startswith("error:") and "nope" in observed[2]
    assert result.results[3]["kwargs"]["column"] == "user_id"  # matched case-insensitively


def test_results_come_back_in_spec_order_whatever_gx_returns_first():
    """GX lists expectations whose metrics failed first and gives an unsaved suite's
    expectations no ids: each result finds its spec by type and arguments, also for
    identical specs and for specs with a meta of their own."""
    same = ExpectationSpec(type="ExpectColumnValuesToNotBeNull", kwargs={"column": "plan"})
    specs = [same,
             ExpectationSpec(type="ExpectColumnValuesToBeBetween", kwargs={"column": "nope", "min_value": 0}),
             ExpectationSpec(type="ExpectTableRowCountToEqual", kwargs={"value": 4, "meta": {"why": "contract"}}),
             same,
             ExpectationSpec(type="ExpectTableRowCountToEqual", kwargs={"value": 4, "meta": "not a dict"})]
    result = validate(specs, OLD)
    assert [r["type"] for r in result.results] == [s.type for s in specs]
    assert [r["success"] for r in result.results] == [False, False, True, False, False]
    assert result.results[0]["observed"] == result.results[3]["observed"]  # the NULL plan, twice
    assert result.results[1]["observed"].startswith("error:")
    assert result.results[2]["observed"] == 4 and result.results[2]["kwargs"]["meta"] == {"why": "contract"}
    assert result.results[4]["observed"].startswith("bad arguments:")


def test_types_are_checked_against_the_engine_not_pandas():
    specs = [ExpectationSpec(type="ExpectColumnValuesToBeOfType", kwargs={"column": "user_id", "type_": "bigint"}),
             ExpectationSpec(type="ExpectColumnValuesToBeOfType", kwargs={"column": "amount", "type_": "int"}),
             ExpectationSpec(type="ExpectColumnValuesToBeInTypeList",
                             kwargs={"column": "plan", "type_list": ["int", "text"]})]
    result = validate(specs, OLD)
    assert [(r["success"], r["observed"]) for r in result.results] == \
        [(True, "BIGINT"), (False, "DECIMAL(12,2)"), (True, "VARCHAR")]
    engine = validate(specs[:1], OLD, engine_types=[("user_id", "INTEGER")])
    assert not engine.passed and engine.results[0]["observed"] == "INTEGER"


@pytest.fixture
def dbt_root(tmp_path):
    root = tmp_path / "music-dbt"
    (root / "models" / "marts").mkdir(parents=True)
    (root / "dbt_project.yml").write_text("name: music\nmodel-paths: [models]\n"
                                          "models: {music: {marts: {+contract: {enforced: true}}}}\n")
    (root / "models" / "marts" / "schema.yml").write_text(textwrap.dedent("""\
        version: 2
        models:
          - name: other
            columns: [{name: x, tests: [not_null]}]
          - name: daily
            data_tests:
              - dbt_utils.unique_combination_of_columns: {combination_of_columns: [user_id, plan]}
            columns:
              - name: user_id
                data_type: bigint
                data_tests: [not_null, unique, {relationships: {to: "ref('users')", field: id}}]
              - name: plan
                data_type: text
                tests:
                  - accepted_values: {values: [free, paid]}
                  - not_null: {config: {where: "plan is not null"}}
              - name: ms
                tests: [{not_null: {config: {severity: warn}}}, my_custom_test]
        """))
    return root


def test_dbt_contract_is_read_from_schema_yml(dbt_root):
    specs = dbt_expectations(dbt_root, "daily")
    assert {s.origin for s in specs} == {"dbt"}
    assert [(s.type, s.kwargs) for s in specs] == [
        ("ExpectColumnValuesToNotBeNull", {"column": "user_id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "user_id"}),
        ("ExpectColumnValuesToBeOfType", {"column": "user_id", "type_": "bigint"}),
        ("ExpectColumnValuesToBeInSet", {"column": "plan", "value_set": ["free", "paid"]}),
        ("ExpectColumnValuesToBeOfType", {"column": "plan", "type_": "text"}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["user_id", "plan"]}),
    ]  # relationships, `where`-filtered, warn-only and custom tests are skipped
    assert dbt_expectations(dbt_root, "missing") == []
    assert dbt_expectations(dbt_root.parent / "no-project", "daily") == []


def test_dbt_contract_fails_when_violated(dbt_root):
    specs = dbt_expectations(dbt_root, "daily")
    good = pa.table({"user_id": pa.array([1, 2], pa.int64()), "plan": ["free", "paid"]})
    assert validate(specs, good).passed
    bad = pa.table({"user_id": pa.array([1, None, 1], pa.int32()), "plan": ["free", "gold", "paid"]})
    assert set(_failed(validate(specs, bad))) == {
        ("ExpectColumnValuesToNotBeNull", "user_id"), ("ExpectColumnValuesToBeUnique", "user_id"),
        ("ExpectColumnValuesToBeOfType", "user_id"), ("ExpectColumnValuesToBeInSet", "plan")}


def _campaign(expectations: list[dict]) -> Campaign:
    return Campaign.model_validate({
        "campaign": "c", "title": "t", "owners": ["o"], "warehouse": "duckdb:///w.duckdb",
        "source": "a.x", "target": "a.y", "simulation": {"expectations": expectations}})


def test_campaign_expectations_apply_by_consumer_dataset_and_columns():
    campaign = _campaign([
        {"type": "ExpectColumnValuesToBeBetween", "kwargs": {"column": "ms", "max_value": 15}},
        {"type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": "country"}},
        {"type": "ExpectTableRowCountToBeBetween", "kwargs": {"min_value": 5}, "consumer": "repo:q.sql"},
        {"type": "ExpectColumnValuesToBeUnique", "kwargs": {"column": "plan"}, "consumer": "marts.daily"},
    ])
    specs = campaign_expectations(campaign, "repo:q.sql", OLD.column_names)
    assert [s.type for s in specs] == ["ExpectColumnValuesToBeBetween", "ExpectTableRowCountToBeBetween"]
    assert {s.origin for s in specs} == {"campaign"}
    result = validate(specs, OLD)
    assert set(_failed(result)) == {("ExpectColumnValuesToBeBetween", "ms"),
                                    ("ExpectTableRowCountToBeBetween", None)}
    by_dataset = campaign_expectations(campaign, "views:x", OLD.column_names, dataset="marts.daily")
    assert [s.type for s in by_dataset] == ["ExpectColumnValuesToBeBetween", "ExpectColumnValuesToBeUnique"]


# --- through `simulate`: the evidence --------------------------------------------------

WAREHOUSE = """
CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2;
CREATE TABLE analytics.plays (play_id BIGINT, user_id BIGINT, plan VARCHAR, ms_played BIGINT);
INSERT INTO analytics.plays VALUES (1, 10, 'free', 1000), (2, 10, 'free', 2000), (3, 11, 'paid', 500),
    (4, 12, 'gold', 700), (5, NULL, 'free', 100);
CREATE TABLE analytics_v2.plays AS
    SELECT play_id, user_id AS account_id, plan, CAST(ms_played / 1000 AS DECIMAL(12, 3)) AS duration_s
    FROM analytics.plays;
"""

DBT = {
    "dbt_project.yml": "name: music\nprofile: music\nmodel-paths: [models]\n",
    "profiles.yml": "music:\n  target: dev\n  outputs:\n    dev: {type: duckdb, schema: dbt}\n",
    "models/sources.yml": "version: 2\nsources:\n  - name: analytics\n    tables: [{name: plays}]\n"
                          "  - name: analytics_v2\n    tables: [{name: plays}]\n",
    "models/daily.sql": "select user_id, plan, count(*) as plays\n"
                        "from {{ source('analytics', 'plays') }}\ngroup by user_id, plan\n",
    # The data has a 'gold' plan and a null user: the contract is broken before and after.
    "models/schema.yml": textwrap.dedent("""\
        version: 2
        models:
          - name: daily
            columns:
              - name: user_id
                data_tests: [not_null]
              - name: plan
                data_tests: [{accepted_values: {values: [free, paid]}}]
        """),
}

GROWTH = {"queries/top.sql": "SELECT user_id, COUNT(*) AS n FROM analytics.plays GROUP BY user_id\n",
          "queries/plans.sql": "SELECT plan, COUNT(*) AS n FROM analytics.plays GROUP BY plan\n"}

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


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    import duckdb

    from conftest import make_git_repo

    root = tmp_path_factory.mktemp("gx-fleet")
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    con.execute(WAREHOUSE)
    con.close()
    make_git_repo(root / "repos" / "music-dbt", DBT)
    make_git_repo(root / "repos" / "growth", GROWTH)
    (root / "campaign.yaml").write_text(CAMPAIGN + textwrap.dedent("""\
        simulation:
          expectations:
            - {type: ExpectTableRowCountToBeBetween, kwargs: {max_value: 2}, consumer: growth/queries/top.sql}
            - {type: ExpectColumnValuesToNotBeNull, kwargs: {column: plan}}
        """))
    (root / "plain.yaml").write_text(CAMPAIGN)
    return root


def simulated(campaign_file, out):
    """``skein plan``'s steps up to the simulation; returns (context, simulations)."""
    from conftest import rewritten
    from skein.pipeline import simulate_consumers
    from skein.spec import load_campaign

    ctx, ids = rewritten(load_campaign(campaign_file), out)
    simulate_consumers(ctx, ids)
    return ctx, ctx.simulations()


def test_simulation_evidence_carries_expectations(fleet, tmp_path):
    """Without campaign expectations, only the dbt model (its contract) fails."""
    _, simulations = simulated(fleet / "plain.yaml", tmp_path)
    assert {cid: s.status for cid, s in simulations.items()} == {
        "growth/queries/plans.sql": "pass", "growth/queries/top.sql": "pass",
        "music-dbt/models/daily.sql": "fail"}
    plans = simulations["growth/queries/plans.sql"]
    assert plans.expectations_passed is True
    assert {r["origin"] for r in plans.expectations} == {"profile"}
    assert ("ExpectColumnValuesToBeInSet", {"column": "plan", "value_set": ["free", "gold", "paid"]}) in \
        [(r["type"], r["kwargs"]) for r in plans.expectations]
    daily = simulations["music-dbt/models/daily.sql"]
    assert daily.only_old == daily.only_new == 0  # parity holds: the contract fails on both sides
    assert daily.reason == ("expectations failed: ExpectColumnValuesToNotBeNull(user_id) [dbt], "
                            "ExpectColumnValuesToBeInSet(plan) [dbt]")
    failed = [r for r in daily.expectations if not r["success"]]
    assert [r["observed"]["partial_unexpected_list"] for r in failed] == [[None], ["gold"]]


def test_failed_expectations_fail_the_simulation(fleet, tmp_path):
    """A campaign expectation the data breaks turns a passing dry run into a failure naming
    it, in the evidence written by the plan."""
    from skein.pipeline import summarize

    ctx, simulations = simulated(fleet / "campaign.yaml", tmp_path)
    top = simulations["growth/queries/top.sql"]
    assert top.status == "fail" and top.expectations_passed is False
    assert top.reason == "expectations failed: ExpectTableRowCountToBeBetween() [campaign]"
    assert [(r["origin"], r["observed"]) for r in top.expectations if not r["success"]] == \
        [("campaign", 4)]
    plans = simulations["growth/queries/plans.sql"]  # the campaign-wide one applies, and holds
    assert plans.status == "pass"
    assert [r["type"] for r in plans.expectations if r["origin"] == "campaign"] == \
        ["ExpectColumnValuesToNotBeNull"]
    assert not any(r["origin"] == "campaign" for r in top.expectations if r["success"])  # no `plan` column

    plan = summarize(ctx).plan
    items = {i.id: i for i in plan.items}
    assert items["growth/queries/top.sql"].status == "failed"
    assert items["growth/queries/top.sql"].reason.startswith("simulation fail")
    evidence = (tmp_path / "simulation" / "growth__queries__top.sql.json").read_text()
    assert "ExpectTableRowCountToBeBetween" in evidence
