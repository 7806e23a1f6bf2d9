"""dbt YAML edits as minimal diffs (issue 19), on the YAML of real public dbt projects from
PyPI (tests/dbt_material.py) and on small fixtures, and "does not read the source" as
``unchanged`` through the CLI.

Every patch here passes ``check_yaml_patch``: it re-parses, the parsed differences are
exactly the intended ones, and every byte outside the edited spans survives.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

import dbt_material
from test_bad_input import world  # noqa: F401 - a one-repository world with a campaign
from skein.rewrite.dbt_yaml import (Owner, YamlPatch, declare_source_table, new_sources_file,
                                    rename_columns, retype_columns)
from skein.rewrite.dbt_yaml_check import (YamlEditRefused, check_yaml_patch, dropped_column_needs,
                                          metrics_needing, plain, verified)
from skein.rewrite.edits import Edit


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dbt-yaml")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def assert_minimal(patch: YamlPatch, file: str, changed_lines: int | None = None) -> str:
    """The patch is in scope; comments and key order survive; returns the new text."""
    new = patch.text
    assert check_yaml_patch(patch, new, file) == []
    old_lines, new_lines = patch.original.splitlines(), new.splitlines()
    comments = [line for line in old_lines if line.lstrip().startswith("#") or " #" in line]
    assert all(c in new_lines or any(c.split("#")[1] in n for n in new_lines) for c in comments)
    removed = [line for line in difflib.ndiff(old_lines, new_lines) if line.startswith("- ")]
    spans = sorted({patch.original.count("\n", 0, e.start) for e in patch.edits if e.start != e.end})
    assert len(removed) == len(spans)  # only lines holding a replaced value left
    if changed_lines is not None:
        assert len(removed) + sum(e.text.count("\n") for e in patch.edits if e.start == e.end) \
            >= changed_lines
    old_keys, new_keys = key_order(plain(patch.original)), key_order(plain(new))
    assert [k for k in new_keys if k in old_keys] == old_keys
    return new


def key_order(data, path=()) -> list:
    out = []
    if isinstance(data, dict):
        for key, value in data.items():
            out.append((*path, key))
            out += key_order(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += key_order(value, (*path, i))
    return [p for p in out if not any(isinstance(x, int) and x > 999 for x in p)]


# --- the real projects --------------------------------------------------------------------

def test_metricflow_semantic_model_follows_a_renamed_column(scratch):
    root = dbt_material.project_root("metricflow", scratch)
    file = root / "models" / "sample_model" / "transactions.yml"
    text = read(file)
    patch = rename_columns(text, str(file), Owner("model", "transactions"),
                           {"transaction_amount_usd": "amount_usd"})
    new = assert_minimal(patch, file.name)
    data = plain(new)["semantic_models"][0]
    measures = {m["name"]: m for m in data["measures"]}
    # public names are kept (metrics.yml's `measure: transaction_amount_usd` still resolves)
    assert measures["transaction_amount_usd"]["expr"] == "amount_usd"
    assert measures["quick_buy_amount_usd"]["expr"] == (
        "CASE WHEN transaction_type_name = 'quick-buy' THEN amount_usd ELSE 0 END")
    dimensions = {d["name"]: d for d in data["dimensions"]}
    assert dimensions["is_large"]["expr"] == "CASE WHEN amount_usd >= 30 THEN TRUE ELSE FALSE END"
    assert "transaction_amount_usd" not in re.sub(r"name: transaction_amount_usd", "", new)
    assert len(patch.edits) == 5  # 1 expr inserted, 4 expr edited
    metrics = root / "models" / "sample_model" / "metrics.yml"
    assert "measure: transaction_amount_usd" in read(metrics)
    assert [m["name"] for m in data["measures"]] == [
        m["name"] for m in plain(text)["semantic_models"][0]["measures"]]
    untouched = rename_columns(read(metrics), str(metrics), Owner("model", "transactions"),
                               {"transaction_amount_usd": "amount_usd"})
    assert untouched.edits == [] and untouched.text == read(metrics)


def test_metricflow_dropped_column_escalates_with_the_measures_that_need_it(scratch):
    file = dbt_material.project_root("metricflow", scratch) / "models" / "sample_model" / "transactions.yml"
    needs = dropped_column_needs(read(file), str(file), Owner("model", "transactions"),
                                 {"transaction_amount_usd"})
    named = {re.search(r"(measures|dimensions) '(\w+)'", str(n)).group(2) for n in needs}
    assert named == {"transaction_amount_usd", "quick_buy_amount_usd", "cancellations_usd",
                     "alterations_usd", "is_large"}
    lines = read(file).splitlines()
    for need in needs:
        assert str(need).startswith(f"{file}:{need.line}: column transaction_amount_usd is dropped")
        assert "- name:" in lines[need.line - 1]


def test_metricflow_metrics_that_need_a_dropped_column_escalate_with_their_lines(scratch):
    folder = dbt_material.project_root("metricflow", scratch) / "models" / "sample_model"
    semantic = folder / "transactions.yml"
    needs = dropped_column_needs(read(semantic), str(semantic), Owner("model", "transactions"),
                                 {"transaction_amount_usd"})
    metrics = folder / "metrics.yml"
    found = metrics_needing(read(metrics), str(metrics), needs)
    assert [str(n).split(": ", 1)[1] for n in found] == [
        "metric 'quick_buy_amount_usd' needs measure 'quick_buy_amount_usd'",
        "metric 'cancellations' needs measure 'cancellations_usd'",
        "metric 'alterations' needs measure 'alterations_usd'",
        "metric 'transaction_amount' needs measure 'transaction_amount_usd'",
        "metric 'cancellation_rate' needs metric 'cancellations'",  # ratio over a metric that needs it
        "metric 'revenue_usd' needs metric 'transaction_amount'",  # derived
        "metric 'cancellations_mx' needs measure 'cancellations_usd'",
        "metric 'transaction_usd_na' needs measure 'transaction_amount_usd'"]
    lines = read(metrics).splitlines()
    assert all(lines[n.line - 1].split(":")[0].strip().lstrip("- ") in ("measure", "numerator", "name")
               for n in found)
    assert metrics_needing(read(semantic), str(semantic), needs) == []


def test_metric_filters_naming_a_dimension_that_needs_a_dropped_column_escalate():
    needs = dropped_column_needs(SEMANTIC, "s.yml", Owner("model", "orders"), {"waiter_id"})
    assert [(n.part, n.name) for n in needs] == [("entities", "waiter_id")]
    metrics = ("metrics:\n  - name: orders_by_waiter\n    type: simple\n    type_params:\n"
               "      measure: {name: tip, filter: \"{{ Entity('order__waiter_id') }} > 3\"}\n"
               "  - name: plain\n    type_params:\n      measure: tip\n")
    assert [str(n) for n in metrics_needing(metrics, "m.yml", needs)] == [
        "m.yml:5: metric 'orders_by_waiter' needs dimension 'order__waiter_id' in its filter"]


def test_sbdk_documented_source_column_is_renamed_with_its_tests(scratch):
    file = dbt_material.project_root("sbdk", scratch) / "models" / "_sources.yml"
    text = read(file)
    patch = rename_columns(text, str(file), Owner("source", "raw.raw_events"), {"timestamp": "event_ts"})
    new = assert_minimal(patch, file.name, changed_lines=1)
    events = plain(new)["sources"][0]["tables"][1]
    column = next(c for c in events["columns"] if c["name"] == "event_ts")
    assert column["tests"] == ["not_null"] and column["description"] == "When the event occurred"
    diff = [line for line in difflib.unified_diff(text.splitlines(), new.splitlines(), lineterm="")
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert diff == ["-          - name: timestamp", "+          - name: event_ts"]


def test_sbdk_target_declared_next_to_the_source_and_a_dropped_column_escalates(scratch):
    file = dbt_material.project_root("sbdk", scratch) / "models" / "_sources.yml"
    text = read(file)
    patch, name = declare_source_table(text, str(file), "main", "raw_events_v2")
    new = assert_minimal(patch, file.name)
    assert name == "raw"
    tables = plain(new)["sources"][0]["tables"]
    assert tables[-1] == {"name": "raw_events_v2"} and len(tables) == len(plain(text)["sources"][0]["tables"]) + 1
    needs = dropped_column_needs(text, str(file), Owner("source", "raw.raw_events"), {"timestamp"})
    assert len(needs) == 1
    line = needs[0].line
    assert str(needs[0]) == f"{file}:{line}: column timestamp is dropped but test 'not_null' needs it"
    assert text.splitlines()[line - 1].strip() == "- not_null"
    assert text.splitlines()[line - 4].strip() == "- name: timestamp"


def test_sushi_seed_rename_reaches_relationships_tests_that_point_at_it(scratch):
    root = dbt_material.project_root("sushi", scratch)
    file = root / "seeds" / "properties.yml"
    text = read(file)
    patch = rename_columns(text, str(file), Owner("seed", "orders"),
                           {"waiter_id": "server_id", "id": "order_id"})
    new = assert_minimal(patch, file.name)
    seeds = {s["name"]: s for s in plain(new)["seeds"]}
    assert [c["name"] for c in seeds["orders"]["columns"]][:3] == ["order_id", "customer_id", "server_id"]
    order_id = next(c for c in seeds["order_items"]["columns"] if c["name"] == "order_id")
    assert order_id["tests"][0]["relationships"] == {"to": "ref('orders')", "field": "order_id"}
    item_id = next(c for c in seeds["order_items"]["columns"] if c["name"] == "item_id")
    assert item_id["tests"][0]["relationships"]["field"] == "id"  # points at items, not orders
    assert seeds["items"]["columns"][0]["name"] == "id" and seeds["waiter_names"]["columns"][0]["name"] == "id"
    assert len(patch.edits) == 3


def test_sushi_schema_rename_edits_a_test_where_clause_and_a_contract_type(scratch):
    file = dbt_material.project_root("sushi", scratch) / "models" / "schema.yml"
    text = read(file)
    patch = rename_columns(text, str(file), Owner("model", "waiter_as_customer_by_day"),
                           {"waiter_id": "server_id"})
    new = assert_minimal(patch, file.name)
    model = next(m for m in plain(new)["models"] if m["name"] == "waiter_as_customer_by_day")
    column = next(c for c in model["columns"] if c["name"] == "server_id")
    assert column["tests"][0] == {"not_null": {"config": {"where": "server_id > 1"}}}
    assert column["tests"][1]["relationships"]["field"] == "waiter_id"  # a column of waiters
    assert new.count("waiter_id") == text.count("waiter_id") - 2
    retyped = retype_columns(text, str(file), Owner("model", "top_waiters"), {"unused_column": "bigint"})
    new = assert_minimal(retyped, file.name, changed_lines=1)
    assert "        data_type: bigint\n" in new and "data_type: int\n" not in new


def test_airbnb_reviews_target_declared_and_undocumented_columns_need_nothing(scratch):
    file = dbt_material.project_root("airbnb", scratch) / "models" / "sources.yml"
    text = read(file)
    patch, name = declare_source_table(text, str(file), "main", "raw_reviews_v2")
    new = assert_minimal(patch, file.name)
    assert name == "airbnb"
    assert [t["name"] for t in plain(new)["sources"][0]["tables"]] == [
        "hosts", "listings", "reviews", "raw_reviews_v2"]
    assert new.startswith(text[:text.index("identifier: raw_reviews") + len("identifier: raw_reviews\n")])
    renames = {"SENTIMENT": "SENTIMENT_LABEL", "DATE": "REVIEWED_AT"}
    for owner in (Owner("source", "airbnb.raw_reviews"), Owner("source", "airbnb.reviews")):
        same = rename_columns(text, str(file), owner, renames)
        assert same.edits == [] and check_yaml_patch(same, text, file.name) == []
    assert dropped_column_needs(text, str(file), Owner("source", "airbnb.reviews"), {"date"}) == []


# --- one small fixture per edit function -----------------------------------------------------

COLUMNS = """\
version: 2
models:
  - name: orders   # the fact table
    data_tests:
      - unique:
          column_name: "waiter_id || '-' || id"
      - dbt_utils.unique_combination_of_columns:
          combination_of_columns: [id, waiter_id, waiter_idx]
    columns:
      - name: Waiter_ID
        data_type: integer
        data_tests:
          - not_null:
              config:
                where: "waiter_id > 0 and note <> 'waiter_id'"
      - name: waiter_idx
  - name: other
    columns:
      - name: waiter_id
        tests:
          - relationships: {to: "ref('orders')", field: waiter_id}
"""


def test_rename_columns_fixture():
    patch = rename_columns(COLUMNS, "m.yml", Owner("model", "orders"), {"waiter_id": "server_id"})
    new = assert_minimal(patch, "m.yml")
    assert new == COLUMNS.replace("name: Waiter_ID", "name: server_id").replace(
        "where: \"waiter_id > 0", "where: \"server_id > 0").replace(
        "\"waiter_id || '-'", "\"server_id || '-'").replace("field: waiter_id", "field: server_id").replace(
        "[id, waiter_id, waiter_idx]", "[id, server_id, waiter_idx]")
    assert "waiter_idx" in new and "note <> 'waiter_id'" in new and "  - name: other\n    columns:\n      - name: waiter_id" in new


SEMANTIC = """\
semantic_models:
  - name: orders
    model: ref( "orders" )
    entities:
      - name: waiter_id   # the waiter
        type: foreign
    measures:
      - name: tip
        agg: sum
        expr: |
          case when tip > 0
            then tip else 0 end
      - {name: tips_flow, agg: sum}
  - name: elsewhere
    model: ref('other')
    measures:
      - name: tip
        agg: sum"""


def test_semantic_model_fixture_inserts_expr_and_edits_block_scalars():
    patch = rename_columns(SEMANTIC, "s.yml", Owner("model", "orders"),
                           {"waiter_id": "server_id", "tip": "tip_usd", "tips_flow": "x"})
    new = assert_minimal(patch, "s.yml")
    model = plain(new)["semantic_models"][0]
    assert model["entities"][0] == {"name": "waiter_id", "type": "foreign", "expr": "server_id"}
    assert model["measures"][0]["expr"] == "case when tip_usd > 0\n  then tip_usd else 0 end\n"
    assert model["measures"][1] == {"name": "tips_flow", "agg": "sum"}  # flow style: left alone
    assert plain(new)["semantic_models"][1] == plain(SEMANTIC)["semantic_models"][1]
    assert "      - name: waiter_id   # the waiter\n        expr: server_id\n" in new


def test_retype_columns_fixture():
    text = "sources:\n  - name: pos\n    tables:\n      - name: items\n        identifier: items_raw\n" \
           "        columns:\n          - name: price\n            data_type: 'double'\n"
    patch = retype_columns(text, "s.yml", Owner("source", "pos.items_raw"), {"PRICE": "integer"})
    assert assert_minimal(patch, "s.yml").endswith("            data_type: integer\n")
    assert retype_columns(text, "s.yml", Owner("source", "pos.items"), {"other": "int"}).edits == []


def test_declare_source_table_fixture():
    no_newline = "sources:\n  - name: raw\n    schema: landing\n    tables:\n      - name: a  # first"
    patch, name = declare_source_table(no_newline, "s.yml", "pos", "orders_v2")
    new = assert_minimal(patch, "s.yml")
    assert name == "pos" and new == no_newline + (
        "\n  - name: pos\n    schema: pos\n    tables:\n      - name: orders_v2\n")
    same_schema, name = declare_source_table(no_newline, "s.yml", "LANDING", "b")
    assert name == "raw" and same_schema.text == no_newline + "\n      - name: b\n"
    assert declare_source_table("models:\n  - name: m\n", "m.yml", "pos", "t") is None
    fresh = YAML(typ="safe").load(new_sources_file("pos", "orders_v2"))
    assert fresh["sources"] == [{"name": "pos", "schema": "pos", "tables": [{"name": "orders_v2"}]}]


def test_dropped_column_needs_fixture():
    needs = dropped_column_needs(COLUMNS, "m.yml", Owner("model", "orders"), {"waiter_id"})
    assert [str(n) for n in needs] == [
        "m.yml:13: column Waiter_ID is dropped but test 'not_null' needs it",
        "m.yml:11: column Waiter_ID is dropped but its contract (data_type) needs it"]
    needs = dropped_column_needs(SEMANTIC, "s.yml", Owner("model", "orders"), {"tip"})
    assert [str(n) for n in needs] == ["s.yml:8: column tip is dropped but measures 'tip' needs it"]


def test_the_scope_check_refuses_what_the_patch_did_not_intend():
    patch = rename_columns(COLUMNS, "m.yml", Owner("model", "orders"), {"waiter_id": "server_id"})
    assert check_yaml_patch(patch, patch.text.replace("# the fact table", "# fact"), "m.yml") == [
        f"m.yml: bytes outside the edited spans changed (first at offset {COLUMNS.index('the fact table')})"]
    at = COLUMNS.index("name: waiter_idx") + len("name: ")
    sneaky = YamlPatch(COLUMNS, patch.edits + [Edit(at, at + len("waiter_idx"), "tip", "x")],
                       dict(patch.expected))
    assert check_yaml_patch(sneaky, sneaky.text, "m.yml") == [
        "m.yml: models.0.columns.1.name changed, not by the campaign"]
    wrong = YamlPatch(COLUMNS, patch.edits, {**patch.expected, ("models", 0, "columns", 0, "name"):
                                             ("Waiter_ID", "other")})
    assert check_yaml_patch(wrong, wrong.text, "m.yml") == [
        "m.yml: models.0.columns.0.name is 'server_id', expected 'other'"]
    broken = YamlPatch(COLUMNS, [Edit(0, 0, "[", "x")], {})
    assert check_yaml_patch(broken, broken.text, "m.yml")[0].startswith(
        "m.yml: the patched YAML does not parse")


def test_an_edit_through_a_shared_anchor_is_refused_and_crlf_files_keep_crlf():
    shared = "models:\n  - name: a\n    columns: &cols\n      - name: x\n  - name: b\n    columns: *cols\n"
    patch = rename_columns(shared, "m.yml", Owner("model", "b"), {"x": "y"})
    with pytest.raises(YamlEditRefused, match="models.0.columns.0.name changed, not by the campaign"):
        verified(patch, "m.yml")
    crlf = "sources:\r\n  - name: raw\r\n    tables:\r\n      - name: t\r\n"
    patch, _ = declare_source_table(crlf, "s.yml", "raw", "u")
    assert verified(patch, "s.yml").text == crlf + "      - name: u\r\n"
    semantic = SEMANTIC.replace("\n", "\r\n")
    patch = verified(rename_columns(semantic, "s.yml", Owner("model", "orders"), {"waiter_id": "w"}), "s.yml")
    assert "\r\n        expr: w\r\n" in patch.text and "\n" not in patch.text.replace("\r\n", "")


# --- "does not read the source" is unchanged, exit 0 ------------------------------------------

def test_skein_rewrite_leaves_a_file_that_does_not_read_the_source_unchanged(world, tmp_path, capsys):
    from skein.cli import main

    file = tmp_path / "other.sql"
    file.write_text("-- not ours\nSELECT 1 AS x FROM analytics.other\n")
    assert main(["rewrite", str(world), str(file)]) == 0
    out, err = capsys.readouterr()
    assert out == file.read_text() and "unchanged: does not read analytics.plays" in err
    assert "escalated" not in err
    assert main(["rewrite", str(world), str(file), "--diff"]) == 0
    assert capsys.readouterr().out == ""


def test_a_dbt_model_whose_jinja_hides_the_relation_is_not_called_unchanged(tmp_path):
    from skein.agents.rule import rewrite
    from skein.rewrite.testing import example_request

    root = tmp_path / "proj"
    (root / "models").mkdir(parents=True)
    (root / "macros").mkdir()
    (root / "dbt_project.yml").write_text("name: p\nprofile: p\nmodel-paths: [models]\nmacro-paths: [macros]\n")
    (root / "macros" / "t.sql").write_text(
        "{% macro t() %}analytics.plays as some_rather_long_alias_name{% endmacro %}\n")
    text = "select 1 as one from {{ t() }}\n"
    (root / "models" / "m.sql").write_text(text)
    request = example_request(text, {}).model_copy(update={
        "dbt_project_root": str(root), "consumer_path": str(root / "models" / "m.sql")})
    result = rewrite(request)
    assert result.kind == "escalation" and "`{{ t() }}` renders to something" in result.reason


def test_a_consumer_that_stops_reading_the_source_is_planned_unchanged_not_escalated(world, tmp_path):
    """The rules read the file as it is at rewrite time (``request_for``): one that no longer
    reads the source there is unchanged, audited as nothing, counted nowhere as escalated
    (plan, summary, approval)."""
    from skein.audit import Action
    from skein.pipeline import approval_text, discover, open_plan, rewrite_consumers, summarize
    from skein.spec import load_campaign

    ctx = open_plan(load_campaign(world), tmp_path / "plan")
    ids = discover(ctx, workers=1)
    assert ids == ["growth/a.sql", "growth/b.sql"]
    (world.parent / "repos" / "growth" / "a.sql").write_text("SELECT 1 AS user_id FROM analytics.other\n")
    assert rewrite_consumers(ctx, ids) == {"growth/a.sql": "unchanged", "growth/b.sql": "patched"}
    assert ctx.files.results(ids)["growth/a.sql"].kind == "unchanged"
    summary = summarize(ctx, simulated=False)
    item = next(i for i in summary.plan.items if i.id == "growth/a.sql")
    assert (item.status, item.agent, item.reason) == (
        "unchanged", "rule", "does not read analytics.plays: nothing to rewrite")
    assert summary.plan.counts["escalated"] == 0 and summary.escalated == []
    approval = approval_text(ctx)
    assert "Not applied" not in approval and "**0 escalated**" in approval
    assert [e.consumer for e in ctx.events(Action.ESCALATED)] == []


def test_skein_plan_exits_0_when_a_repository_holds_files_that_do_not_read_the_source(world, capsys):
    from skein.cli import main

    (world.parent / "repos" / "growth" / "c.sql").write_text("SELECT 1 AS x FROM analytics.other\n")
    assert main(["plan", str(world), "--out", str(world.parent / "out"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan for ") and "escalated" not in out  # counts name only what is there
    plan = json.loads((world.parent / "out" / "plan.json").read_text())
    assert plan["counts"]["escalated"] == 0 and "growth/c.sql" not in {i["id"] for i in plan["items"]}


@pytest.mark.parametrize("text, says", [
    ("models:\n  - name: a\n    columns: [\n", "m.yml:4: not valid YAML"),
    ("a: 1\n---\nb: 2\n", "m.yml:2: not valid YAML"),
])
def test_yaml_that_is_not_one_document_is_a_clear_error(text, says):
    from skein.errors import SpecError

    with pytest.raises(SpecError, match=says):
        rename_columns(text, "m.yml", Owner("model", "a"), {"x": "y"})


@pytest.mark.parametrize("text", ["models: 3\n", "models:\n  - 3\n  - name: a\n    columns: {x: 1}\n", ""])
def test_yaml_of_unexpected_shape_is_left_alone(text):
    patch = rename_columns(text, "m.yml", Owner("model", "a"), {"x": "y"})
    assert patch.edits == [] and check_yaml_patch(patch, text, "m.yml") == []
