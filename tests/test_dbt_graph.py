"""dbt-core's own parser on public dbt projects nobody here wrote (issue 19, the foundation):
dbt parse + compile in the isolated dbt environment, in a sandbox child on a copy; the
manifest as frozen data; model columns inferred from the graph.

The projects come from PyPI distributions (tests/material.py, tests/dbt_material.py). Each
is read once per module (dbt takes 5-20 s a project here).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dbt_material import PROJECTS, project_root
from skein.dbt_graph import read_dbt_graph
from skein.dbt_manifest import Column
from skein.dbt_sandbox import DbtSandboxError, dbt_settings
from skein.dbt_schemas import infer_columns

# `make test` creates .venv-dbt (make setup) before any test runs; in CI it always does, so a
# missing dbt environment fails there instead of hiding the suite behind a skip.
pytestmark = pytest.mark.skipif(not dbt_settings().python.is_file() and not os.environ.get("CI"),
                                reason="no .venv-dbt (make setup creates it)")

SECRET = "TOPSECRET-4f1c2a"

# From issue 19's table (and the manifests: f1 and analytics_engineering ship no seeds).
EXPECTED = {
    "sushi": {"model": 7, "seed": 4, "sources": 0},
    "airbnb": {"model": 12, "seed": 0, "sources": 3},
    "f1": {"model": 52, "seed": 0, "sources": 14},
    "analytics_engineering": {"model": 27, "seed": 0, "sources": 19},
    "metricflow": {"model": 4, "seed": 3, "sources": 0},
    "sbdk": {"model": 5, "seed": 0, "sources": 3},
}

# One leaf model per project (no compiled model reads it), its columns exactly.
LEAVES = {
    "sushi": ("model.sushi.top_waiters", ["waiter_id", "revenue", "unused_column"]),
    "airbnb": ("model.airbnb.dim_dates",
               ["date_id", "date_actual", "epoch", "day_suffix", "day_name", "day_of_week",
                "day_of_month", "day_of_quarter", "day_of_year", "week_of_month", "week_of_year",
                "week_of_year_iso", "month_actual", "month_name", "month_name_abbreviated",
                "quarter_actual", "quarter_name", "year_actual", "first_day_of_week",
                "last_day_of_week", "first_day_of_month", "last_day_of_month",
                "first_day_of_year", "last_day_of_year", "mmyyyy", "mmddyyyy", "weekend_indr"]),
    "f1": ("model.f1.most_wins", ["rank", "driver_full_name", "wins"]),
    "analytics_engineering": ("model.analytics_engineering.dim_date",
                              ["id", "full_date", "year", "year_week", "year_day", "fiscal_year",
                               "fiscal_qtr", "month", "month_name", "week_day", "day_name",
                               "day_is_weekday"]),
    "metricflow": ("model.mf_tutorial_project.transactions",
                   ["id_transaction", "id_order", "id_customer", "transaction_amount_usd",
                    "transaction_type_name", "ds"]),
    "sbdk": ("model.sbdk_demo.user_metrics",
             ["user_id", "username", "email", "first_name", "last_name", "user_created_at",
              "country", "city", "subscription_tier", "referrer", "is_active", "age",
              "is_paid_subscriber", "days_since_signup", "has_complete_profile", "total_events",
              "pageviews", "clicks", "logins", "unique_sessions", "active_days",
              "traffic_sources_used", "events_per_session", "activity_frequency_percentage",
              "total_time_on_site", "signups", "purchase_events", "conversion_events",
              "purchase_conversion_rate", "event_conversion_rate", "total_orders",
              "completed_orders", "failed_orders", "recurring_orders", "total_order_revenue",
              "total_event_revenue", "total_revenue", "avg_order_value", "total_discounts_used",
              "product_categories_purchased", "payment_methods_used", "first_event_at",
              "last_event_at", "first_order_at", "last_order_at", "user_type", "estimated_clv",
              "engagement_score", "risk_category", "value_tier", "recency_score",
              "frequency_score", "monetary_score", "updated_at"]),
}


def tree_digest(root: Path) -> str:
    """Every file's path and bytes, and every symlink's target, below ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """Each project's graph and inferred columns, with the project's digest before and after.
    A secret in the parent's environment must not reach dbt's env_var()."""
    scratch = tmp_path_factory.mktemp("projects")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKEIN_STORE_URL", f"postgresql://skein:{SECRET}@db/skein")
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        for name in PROJECTS:
            root = project_root(name, scratch)
            before = tree_digest(root)
            graph = read_dbt_graph(root)
            out[name] = (root, graph, infer_columns(graph), before, tree_digest(root))
    return out


@pytest.mark.parametrize("name", PROJECTS)
def test_dbt_parser_reads_the_project(graphs, name):
    _, graph, _, _, _ = graphs[name]
    assert graph.parser == "dbt", graph.reason
    counts = {"model": len(graph.models()), "seed": len(graph.manifest.of_type("seed")),
              "sources": len(graph.manifest.sources)}
    assert counts == EXPECTED[name]
    assert dict(graph.timings)["parse"] > 0


@pytest.mark.parametrize("name", PROJECTS)
def test_refs_and_sources_resolve(graphs, name):
    _, graph, _, _, _ = graphs[name]
    ids = set(graph.manifest.by_id)
    sources = {(s.source_name, s.name) for s in graph.manifest.sources}
    for node in graph.models():
        assert set(node.depends_on) <= ids, node.unique_id
        assert set(node.sources) <= sources, node.unique_id
        parents = {graph.manifest.node(d).name for d in node.depends_on}
        assert set(node.refs) <= parents, node.unique_id
    assert sum(len(n.refs) + len(n.sources) for n in graph.models()) > 0


@pytest.mark.parametrize("name", PROJECTS)
def test_leaf_model_columns_inferred_from_the_graph(graphs, name):
    _, graph, inferred, _, _ = graphs[name]
    uid, expected = LEAVES[name]
    # A leaf among the models that compile: airbnb's true leaves all call dbt_utils, which is
    # not installed (test_airbnb_missing_package_is_reported_per_model).
    readers = {d for n in graph.compiled_models() for d in n.depends_on}
    assert uid not in readers and graph.manifest.node(uid).compiled_code
    assert inferred[uid].names() == expected


@pytest.mark.parametrize("name", PROJECTS)
def test_project_files_never_modified(graphs, name):
    _, _, _, before, after = graphs[name]
    assert before == after


@pytest.mark.parametrize("name", PROJECTS)
def test_parent_secrets_never_reach_dbt(graphs, name):
    _, graph, _, _, _ = graphs[name]
    for node in graph.manifest.nodes:
        assert SECRET not in (node.compiled_code or "") + (node.compile_error or "")


def test_sushi_graph_details(graphs):
    """Versions, ephemeral and incremental models, seed types from the CSV."""
    _, graph, inferred, _, _ = graphs["sushi"]
    v1 = graph.manifest.node("model.sushi.waiter_revenue_by_day.v1")
    assert (v1.version, v1.dataset, v1.materialized) == ("1", "sushi.waiter_revenue_by_day_v1",
                                                         "incremental")
    assert graph.manifest.node("model.sushi.waiters").materialized == "ephemeral"
    seeds = dict(graph.seeds)
    assert [(c.name, c.data_type) for c in seeds["seed.sushi.items"]][:3] == [
        ("id", "BIGINT"), ("name", "VARCHAR"), ("price", "DOUBLE")]
    assert inferred["model.sushi.customer_revenue_by_day"].names() == ["customer_id", "revenue", "ds"]
    # Types follow the casts in the SQL and the seed types through the views.
    assert [(c.name, c.data_type) for c in inferred["model.sushi.top_waiters"].columns] == [
        ("waiter_id", "INT"), ("revenue", "DOUBLE"), ("unused_column", "INT")]


def test_airbnb_missing_package_is_reported_per_model(graphs):
    """dbt_utils is in packages.yml but not installed: the project still parses; the five
    models calling dbt_utils.generate_surrogate_key do not compile, and say why."""
    _, graph, inferred, _, _ = graphs["airbnb"]
    assert [(s.package, s.macros) for s in graph.stand_ins] == [("dbt_utils", ("generate_surrogate_key",))]
    failed = sorted(n.name for n in graph.models() if n.compiled_code is None)
    assert failed == ["daily_agg_reviews", "dim_listings_hosts", "mom_agg_reviews",
                      "monthly_agg_reviews", "wow_agg_reviews"]
    for node in graph.models():
        if node.compiled_code is None:
            assert "dbt_utils.generate_surrogate_key: package dbt_utils is not installed" in node.compile_error
            assert inferred[node.unique_id].columns is None
    assert len(graph.compiled_models()) == 7
    # Read by those aggregates: inferred from the source model's explicit projection.
    assert inferred["model.airbnb.fct_reviews"].names() == [
        "listing_id", "review_date", "reviewer_name", "review_text", "review_sentiment"]


def test_metricflow_semantic_models_and_metrics(graphs):
    _, graph, _, _, _ = graphs["metricflow"]
    assert len(graph.manifest.semantic_models) == 3 and len(graph.manifest.metrics) == 13
    transactions = next(s for s in graph.manifest.semantic_models if s.name == "transactions")
    assert transactions.model == "model.mf_tutorial_project.transactions"
    assert {"id_transaction", "id_customer", "ds"} <= set(transactions.columns_used())
    assert ("measure", "transaction_amount_usd", None) in transactions.elements
    mx = next(m for m in graph.manifest.metrics if m.name == "cancellations_mx")
    assert mx.measures == ("cancellations_usd",)
    assert "customer__customer_country" in mx.expressions[0]


# ---- hostile projects ----------------------------------------------------------------------

STEAL = """{% macro steal(sql) %}
  {% if execute %}
    {% set result = run_query(sql) %}
    {{ return(result.columns[0].values() | join(',')) }}
  {% endif %}
  {{ return('') }}
{% endmacro %}
"""


def hostile_project(root: Path, secret_file: Path) -> Path:
    """A project whose macros try to read a file outside the copy and the parent's secrets."""
    (root / "models").mkdir(parents=True)
    (root / "macros").mkdir()
    (root / "dbt_project.yml").write_text("name: hostile\nprofile: hostile\nconfig-version: 2\n")
    (root / "profiles.yml").write_text(
        "hostile: {target: dev, outputs: {dev: {type: duckdb, path: '/tmp/not-used.duckdb'}}}\n")
    (root / "macros" / "steal.sql").write_text(STEAL)
    attempts = {
        "read_text": f"select content from read_text('{secret_file}')",
        "read_csv": f"select * from read_csv('{secret_file}', header = false)",
        "attach": f"attach '{secret_file.parent / 'other.duckdb'}' as other",
        "copy_out": f"copy (select 1) to '{secret_file.parent / 'written.csv'}'",
    }
    for name, sql in attempts.items():
        (root / "models" / f"{name}.sql").write_text(
            f"select '{{{{ steal(\"{sql}\") }}}}' as loot")
    (root / "models" / "unlock.sql").write_text(  # try to lift the lock, then read
        "{% if execute %}{% do run_query('set enable_external_access = true') %}{% endif %}"
        f"select '{{{{ steal(\"{attempts['read_text']}\") }}}}' as loot")
    (root / "models" / "env.sql").write_text(
        "select '{{ env_var(\"SKEIN_HOSTILE_SECRET\", \"absent\") }}' as a, "
        "'{{ env_var(\"SKEIN_STORE_URL\", \"absent\") }}' as b, "
        "'{{ modules.re.escape(\"a.b\") }}' as c")
    os.symlink(secret_file, root / "models" / "linked.sql")
    return root


def test_hostile_macros_cannot_read_outside_the_copy(tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret_file = outside / "secret.txt"
    secret_file.write_text(f"{SECRET}\n")
    monkeypatch.setenv("SKEIN_HOSTILE_SECRET", SECRET)
    monkeypatch.setenv("SKEIN_STORE_URL", f"postgresql://u:{SECRET}@h/db")
    root = hostile_project(tmp_path / "hostile", secret_file)
    before = tree_digest(root)

    graph = read_dbt_graph(root)

    assert graph.parser == "dbt", graph.reason
    nodes = {n.name: n for n in graph.models()}
    assert "linked" not in nodes  # the symlink to the secret is not copied
    for node in nodes.values():
        assert SECRET not in (node.compiled_code or "") + (node.compile_error or "") + node.raw_code
    for name in ("read_text", "read_csv", "attach", "copy_out"):
        assert nodes[name].compiled_code is None, name
        assert "file system operations are disabled by configuration" in nodes[name].compile_error
    assert nodes["unlock"].compiled_code is None
    assert "the configuration has been locked" in nodes["unlock"].compile_error
    assert "'absent' as a, 'absent' as b, 'a\\.b' as c" in nodes["env"].compiled_code
    assert not (outside / "written.csv").exists() and not (outside / "other.duckdb").exists()
    assert tree_digest(root) == before


def test_without_dbt_the_home_made_renderer_is_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("SKEIN_DBT_PYTHON", str(tmp_path / "no-such-python"))
    root = project_root("sushi", tmp_path)
    graph = read_dbt_graph(root)
    assert graph.parser == "fallback"
    assert "no dbt interpreter at" in graph.reason and "SKEIN_DBT_PYTHON" in graph.reason
    assert len(graph.models()) == 7  # the renderer sees one model per file
    assert all(n.compiled_code for n in graph.models())


def test_a_dbt_run_past_its_timeout_is_killed_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("SKEIN_DBT_TIMEOUT_S", "0.5")
    graph = read_dbt_graph(project_root("sbdk", tmp_path))
    assert graph.parser == "fallback"
    assert "did not finish within 0.5 s" in graph.reason


def test_warehouse_columns_fill_sources_that_declare_none(graphs):
    """f1's sources declare no columns, so its src_* models (`select *`) are unknown; with the
    warehouse's columns for one source, that chain is inferred (names lowercase)."""
    _, graph, inferred, _, _ = graphs["f1"]
    assert inferred["model.f1.src_drivers"].columns is None
    assert "(unknown columns upstream: src_" in inferred["model.f1.stg_f1_dataset__results"].reason
    assert "declares no columns" in inferred["source.f1.f1_dataset.drivers"].reason
    drivers = graph.manifest.node("source.f1.f1_dataset.drivers")
    warehouse = {drivers.dataset: tuple(Column(n, t) for n, t in (
        ("driverId", "BIGINT"), ("driverRef", "VARCHAR"), ("number", "VARCHAR"), ("code", "VARCHAR"),
        ("forename", "VARCHAR"), ("surname", "VARCHAR"), ("dob", "DATE"),
        ("nationality", "VARCHAR"), ("url", "VARCHAR")))}
    with_warehouse = infer_columns(graph, warehouse)
    assert with_warehouse["model.f1.src_drivers"].names()[:3] == ["driverid", "driverref", "number"]
    staged = with_warehouse["model.f1.stg_f1_dataset__drivers"]
    assert [(c.name, c.data_type) for c in staged.columns][-3:] == [
        ("driver_url", "TEXT"), ("driver_full_name", "TEXT"), ("driver_current_age", "BIGINT")]
    assert len(staged.columns) == 11 and not staged.partial


def test_yaml_declared_source_columns_are_marked_partial(graphs):
    """sbdk's sources list some of their columns in YAML: they seed inference but are marked
    partial; its models name every column after the `select *` CTE, so none is partial."""
    _, graph, inferred, _, _ = graphs["sbdk"]
    users = inferred["source.sbdk_demo.raw.raw_users"]
    assert users.partial and users.names() == ["user_id", "email", "created_at"]
    assert not any(inferred[m.unique_id].partial for m in graph.models())


def small_project(root: Path, models: dict[str, str]) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text("name: small\nprofile: small\nconfig-version: 2\n")
    for name, sql in models.items():
        (root / "models" / f"{name}.sql").write_text(sql)
    return root


def test_a_project_dbt_refuses_falls_back_to_the_renderer_with_dbt_reason(tmp_path):
    """dbt refuses a ref() to a model that does not exist; Skein's renderer still reads it."""
    root = small_project(tmp_path / "p", {"a": "select 1 as x", "b": "select * from {{ ref('gone') }}"})
    graph = read_dbt_graph(root)
    assert graph.parser == "fallback"
    assert graph.reason.startswith("dbt parse failed: ") and "gone" in graph.reason
    assert {n.name: n.refs for n in graph.models()} == {"a": (), "b": ("gone",)}
    assert graph.manifest.node("model.small.a").compiled_code == "select 1 as x"


def test_a_broken_dbt_project_yml_is_one_clear_error(tmp_path):
    root = small_project(tmp_path / "p", {"a": "select 1"})
    (root / "dbt_project.yml").write_text("name: small\nmodels: [unclosed\n")
    with pytest.raises(DbtSandboxError) as caught:
        read_dbt_graph(root)
    message = str(caught.value)
    assert "\n" not in message
    assert "dbt_project.yml line 3: not valid YAML" in message and "nor Skein's renderer" in message


def test_a_missing_project_is_one_clear_error(tmp_path):
    with pytest.raises(DbtSandboxError) as caught:
        read_dbt_graph(tmp_path / "nowhere")
    assert "cannot copy the project into the sandbox" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_warehouse_files_and_symlinks_are_not_copied(tmp_path):
    root = small_project(tmp_path / "p", {"a": "select 1 as x"})
    (root / "local.duckdb").write_bytes(b"not a database")  # a local build's warehouse
    (root / "target").mkdir()
    (root / "target" / "manifest.json").write_text("{not json")  # stale artifacts of a build
    graph = read_dbt_graph(root)
    assert graph.parser == "dbt", graph.reason
    assert [n.name for n in graph.models()] == ["a"]
