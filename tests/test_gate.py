"""The verification gate: the Gate itself, each default check, and the dry run on samples.

The running example: ``analytics.plays(user_id, ms_played, legacy_flag)`` becomes
``analytics_v2.plays(account_id, duration_s)``; consumers also join ``analytics.users``,
which has a ``user_id`` of its own that must not be renamed.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from pydantic import ValidationError
from skein.agents.dry_run import DryRun
from skein.rewrite.request import RewriteRequest
from skein.agents.gate import (
    CheckResult,
    Gate,
    GateVerdict,
    consumer_kind,
    default_gate,
    locality_check,
    scope_check,
    unchanged_check,
)

SCHEMAS = {
    "analytics.plays": {"user_id": "BIGINT", "ms_played": "BIGINT", "legacy_flag": "BOOLEAN"},
    "analytics_v2.plays": {"account_id": "BIGINT", "duration_s": "DOUBLE"},
    "analytics.users": {"user_id": "BIGINT", "country": "VARCHAR"},
}
COLUMNS = {"user_id": "account_id", "ms_played": "CAST(duration_s * 1000 AS BIGINT)", "legacy_flag": None}

# The same plays before and after the migration, as Arrow (BIGINT, BOOLEAN, DOUBLE, VARCHAR).
SAMPLES = {name: pa.Table.from_pylist(rows) for name, rows in {
    "analytics.plays": [{"user_id": 1, "ms_played": 1500, "legacy_flag": False},
                        {"user_id": 1, "ms_played": 500, "legacy_flag": True},
                        {"user_id": 2, "ms_played": 2000, "legacy_flag": False}],
    "analytics_v2.plays": [{"account_id": 1, "duration_s": 1.5},
                           {"account_id": 1, "duration_s": 0.5},
                           {"account_id": 2, "duration_s": 2.0}],
    "analytics.users": [{"user_id": 1, "country": "SE"}, {"user_id": 2, "country": "DE"}],
}.items()}

ORIGINAL = """\
-- Listening per user and country, for the finance dashboard.
SELECT
    p.user_id,
    u.country,
    SUM(p.ms_played) AS total_ms
FROM analytics.plays AS p
JOIN analytics.users AS u ON u.user_id = p.user_id
GROUP BY p.user_id, u.country
"""

CORRECT = """\
-- Listening per user and country, for the finance dashboard.
SELECT
    p.account_id AS user_id,
    u.country,
    SUM(CAST(p.duration_s * 1000 AS BIGINT)) AS total_ms
FROM analytics_v2.plays AS p
JOIN analytics.users AS u ON u.user_id = p.account_id
GROUP BY p.account_id, u.country
"""

# renames the output column user_id
OUTPUT_RENAMED = CORRECT.replace("p.account_id AS user_id,", "p.account_id,")
# also renames analytics.users.user_id, which the migration is not about
UNRELATED_TOUCHED = CORRECT.replace("u.user_id = p.account_id", "u.account_id = p.account_id")


def request(text: str = ORIGINAL, **overrides) -> RewriteRequest:
    fields = dict(consumer_id="finance/queries/listening.sql", text=text, dialect="duckdb",
                  source="analytics.plays", target="analytics_v2.plays", columns=COLUMNS,
                  schemas=SCHEMAS)
    return RewriteRequest(**(fields | overrides))


def passing(request, new_text):
    return CheckResult(name="passing", passed=True)


def failing(request, new_text):
    return CheckResult(name="failing", passed=False, feedback="line 3: do not rename the output")


def crashing(request, new_text):
    raise KeyError("boom")


# ---- Gate --------------------------------------------------------------------------------------

def test_gate_passes_when_every_check_passes():
    verdict = Gate([passing, passing]).verify(request(), CORRECT)
    assert verdict.passed and verdict.failed == [] and verdict.feedback == ""


def test_gate_runs_every_check_and_renders_the_failures():
    calls = []

    def counting(req, text):
        calls.append(text)
        return CheckResult(name="counting", passed=False, feedback="first line\nsecond line")

    verdict = Gate([failing, passing, counting]).verify(request(), CORRECT)
    assert not verdict.passed
    assert calls == [CORRECT]  # not stopped by the first failure
    assert verdict.failed == ["failing", "counting"]
    assert verdict.feedback == ("- failing: line 3: do not rename the output\n"
                                "- counting: first line\n  second line")


def test_a_crashing_check_fails_closed_and_names_the_error():
    verdict = Gate([passing, crashing]).verify(request(), CORRECT)
    assert not verdict.passed
    crashed = verdict.results[1]
    assert crashed.name == "crashing" and "KeyError" in crashed.feedback and "boom" in crashed.feedback


def test_an_empty_gate_is_refused():
    with pytest.raises(ValueError, match="at least one check"):
        Gate([])


def test_verdicts_are_frozen_and_serialisable():
    verdict = Gate([passing, failing]).verify(request(), CORRECT)
    data = json.loads(verdict.model_dump_json())
    assert data["passed"] is False and [r["name"] for r in data["results"]] == ["passing", "failing"]
    assert GateVerdict.model_validate(data) == verdict
    with pytest.raises(ValidationError, match="frozen"):
        verdict.results[0].passed = False


def test_default_gate_checks_in_order():
    assert repr(default_gate(SAMPLES)) == "Gate([unchanged, scope, locality, dry_run])"


# ---- small checks --------------------------------------------------------------------------------

def test_unchanged_check():
    assert not unchanged_check(request(), ORIGINAL).passed
    assert "empty" in unchanged_check(request(), "  \n").feedback
    assert unchanged_check(request(), CORRECT).passed


def test_consumer_kind_from_path_or_dialect():
    assert consumer_kind(request()) == "sql"
    assert consumer_kind(request(consumer_id="jobs/report.py")) == "python"
    assert consumer_kind(request(consumer_id="x", consumer_path="nb/Report.ipynb")) == "python"
    assert consumer_kind(request(dialect="pandas")) == "python"


def test_scope_check_is_skipped_for_python_consumers():
    result = scope_check(request(consumer_id="jobs/report.py"), "anything")
    assert result.passed and result.skipped


def test_real_scope_check_through_the_gate():
    """Uses the rule agent's skein.agents.scope_check.check_scope (fails until it exists).

    Relies on: a faithful rewrite is ok; renaming an output column is a problem."""
    req = request()
    assert scope_check(req, CORRECT).passed, scope_check(req, CORRECT).feedback
    wrong = scope_check(req, OUTPUT_RENAMED)
    assert not wrong.passed and wrong.feedback


# ---- locality (Python consumers) -----------------------------------------------------------------

PANDAS = """\
import duckdb

# weekly report: minutes listened per user
con = duckdb.connect("warehouse.duckdb", read_only=True)
df = con.sql("SELECT user_id, ms_played FROM analytics.plays").df()
df["minutes"] = df["ms_played"] / 60000
print(df.groupby("user_id")["minutes"].sum().head(10))
"""

PANDAS_MIGRATED = """\
import duckdb

# weekly report: minutes listened per user
con = duckdb.connect("warehouse.duckdb", read_only=True)
df = con.sql("SELECT account_id AS user_id, duration_s * 1000 AS ms_played FROM analytics_v2.plays").df()
df["minutes"] = df["ms_played"] / 60000
print(df.groupby("user_id")["minutes"].sum().head(10))
"""


def python_request(text: str = PANDAS) -> RewriteRequest:
    return request(text, consumer_id="reports/weekly.py")


def test_locality_accepts_a_migration_confined_to_the_dataset():
    result = locality_check(python_request(), PANDAS_MIGRATED)
    assert result.passed and not result.skipped, result.feedback


def test_locality_names_an_unrelated_changed_line():
    touched = PANDAS_MIGRATED.replace(".head(10)", ".head(20)")
    result = locality_check(python_request(), touched)
    assert not result.passed
    assert result.feedback.startswith("line 7 changed but names nothing this migration is about")


def test_locality_flags_inserted_and_removed_unrelated_lines():
    inserted = PANDAS_MIGRATED.replace("import duckdb\n", "import duckdb\nimport os\n")
    assert "new line 2 names nothing" in locality_check(python_request(), inserted).feedback
    removed = PANDAS_MIGRATED.replace("# weekly report: minutes listened per user\n", "")
    assert "line 3 removed" in locality_check(python_request(), removed).feedback


def test_locality_requires_the_source_to_be_gone():
    half = PANDAS_MIGRATED.replace("print(", "print('from analytics.plays', ")
    result = locality_check(python_request(), half)
    assert not result.passed and "line 7 still reads analytics.plays" in result.feedback


def test_locality_requires_valid_python():
    broken = PANDAS_MIGRATED.replace(".df()", ".df(")
    result = locality_check(python_request(), broken)
    assert not result.passed and "not valid Python: line 5" in result.feedback


def test_locality_is_skipped_for_sql():
    result = locality_check(request(), CORRECT)
    assert result.passed and result.skipped


# ---- dry run on samples (skein.agents.dry_run) --------------------------------------------------

def test_dry_run_passes_a_faithful_rewrite():
    result = DryRun(SAMPLES)(request(), CORRECT)
    assert result.passed and not result.skipped, result.feedback


def test_dry_run_catches_a_renamed_output_column():
    result = DryRun(SAMPLES)(request(), OUTPUT_RENAMED)
    assert not result.passed
    assert result.feedback == ("output columns differ: expected ['user_id', 'country', 'total_ms'], "
                               "got ['account_id', 'country', 'total_ms'] "
                               "(keep names and order; missing: user_id; unexpected: account_id)")


def test_dry_run_catches_a_changed_output_type():
    uncast = CORRECT.replace("SUM(CAST(p.duration_s * 1000 AS BIGINT))", "SUM(p.duration_s * 1000)")
    result = DryRun(SAMPLES)(request(), uncast)
    assert not result.passed
    assert result.feedback == ("output types differ: total_ms: HUGEINT -> DOUBLE "
                               "(keep each output column's type, e.g. with a CAST)")


def test_dry_run_catches_an_unrelated_column_renamed():
    result = DryRun(SAMPLES)(request(), UNRELATED_TOUCHED)
    assert not result.passed
    assert result.feedback.startswith("the new text fails on the sample: BinderException")
    assert "account_id" in result.feedback


def test_dry_run_catches_different_rows_and_quotes_them():
    wrong = CORRECT.replace("p.duration_s * 1000 AS", "p.duration_s * 100 AS")
    result = DryRun(SAMPLES)(request(), wrong)
    assert not result.passed
    assert result.feedback.splitlines() == [
        "rows differ on the sample (2 expected, 2 returned): 2 row(s) only in old, 2 only in new",
        "  the original returns, the new text does not: "
        "{'user_id': 1, 'country': 'SE', 'total_ms': 2000}; {'user_id': 2, 'country': 'DE', 'total_ms': 2000}",
        "  the new text returns, the original does not: "
        "{'user_id': 1, 'country': 'SE', 'total_ms': 200}; {'user_id': 2, 'country': 'DE', 'total_ms': 200}",
    ]


def test_dry_run_compares_floats_within_the_campaign_tolerance():
    from skein.spec import SimulationSettings

    req = request("SELECT user_id, CAST(ms_played AS DOUBLE) AS ms FROM analytics.plays\n")
    noisy = "SELECT account_id AS user_id, duration_s * 1000 * (1 + 1e-7) AS ms FROM analytics_v2.plays\n"
    strict = DryRun(SAMPLES)(req, noisy)
    assert not strict.passed and strict.feedback.startswith("rows differ on the sample")
    assert DryRun(SAMPLES, settings=SimulationSettings(rel_tol=1e-6))(req, noisy).passed


def test_dry_run_fails_a_leftover_source_reference():
    leftover = CORRECT.replace("JOIN analytics.users AS u ON u.user_id = p.account_id",
                               "JOIN analytics.plays AS old ON old.user_id = p.account_id\n"
                               "JOIN analytics.users AS u ON u.user_id = p.account_id")
    result = DryRun(SAMPLES)(request(), leftover)
    assert not result.passed
    assert result.feedback.startswith("the new text fails on the sample: CatalogException")
    assert result.feedback.endswith("(it still reads analytics.plays, which does not exist after the "
                                    "migration: read analytics_v2.plays)")


def test_dry_run_fails_text_that_does_not_parse():
    result = DryRun(SAMPLES)(request(), "SELEC account_id FROM analytics_v2.plays WHERE (")
    assert not result.passed and result.feedback.startswith("the new text fails on the sample: does not parse")


def test_dry_run_cannot_read_files():
    sneaky = "SELECT * FROM read_csv('/etc/passwd')"
    result = DryRun(SAMPLES)(request(), sneaky)
    assert not result.passed and "Permission" in result.feedback


def test_dry_run_runs_other_dialects_transpiled():
    req = request("SELECT user_id, IFF(ms_played > 1000, 1, 0) AS is_long FROM analytics.plays\n",
                  dialect="snowflake")
    good = ("SELECT account_id AS user_id, IFF(CAST(duration_s * 1000 AS BIGINT) > 1000, 1, 0) AS is_long "
            "FROM analytics_v2.plays\n")
    assert DryRun(SAMPLES)(req, good).passed
    assert not DryRun(SAMPLES)(req, good.replace("> 1000", ">= 500")).passed


class CountingSamples(dict):
    """Samples that record which datasets were read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: list[str] = []

    def __getitem__(self, name):
        self.read.append(name)
        return super().__getitem__(name)


def test_dry_run_reads_only_the_datasets_the_texts_name():
    samples = CountingSamples(SAMPLES | {"analytics.tracks": pa.Table.from_pylist([{"track_id": 1}])})
    assert DryRun(samples)(request(), CORRECT).passed
    assert sorted(samples.read) == ["analytics.plays", "analytics.users", "analytics.users",
                                    "analytics_v2.plays"]  # users: in both worlds


FLOAT16 = pa.table({"account_id": [1], "duration_s": pa.array([1.5], pa.float16())})


@pytest.mark.parametrize(("req", "samples", "why"), [
    (request(), {}, "no samples for analytics.plays, analytics_v2.plays"),
    (request(), {"analytics.plays": SAMPLES["analytics.plays"]}, "no samples for analytics_v2.plays"),
    (request(consumer_id="reports/weekly.py"), SAMPLES, "not SQL"),
    (request("SELECT no_such_column FROM analytics.plays"), SAMPLES,
     "the original fails on the sample: BinderException"),
    (request("{% if x %}SELECT 1{% endif %}"), SAMPLES, "the original fails on the sample: does not parse"),
    (request("DELETE FROM analytics.plays"), SAMPLES,
     "the original fails on the sample: only queries run in the sandbox, not DELETE"),
    (request("SELECT 1; SELECT 2"), SAMPLES, "the original fails on the sample: expected one statement"),
    (request(), SAMPLES | {"analytics_v2.plays": FLOAT16}, "cannot load the samples: Not implemented"),
])
def test_dry_run_skips_when_it_cannot_judge(req, samples, why):
    result = DryRun(samples)(req, CORRECT)
    assert result.passed and result.skipped and result.feedback.startswith(why), result.feedback


def test_dry_run_runs_views():
    view = request("CREATE VIEW marts.listening AS\nSELECT user_id, ms_played FROM analytics.plays\n",
                   consumer_id="warehouse/marts.listening")
    good = ("CREATE VIEW marts.listening AS\n"
            "SELECT account_id AS user_id, CAST(duration_s * 1000 AS BIGINT) AS ms_played FROM analytics_v2.plays\n")
    assert DryRun(SAMPLES)(view, good).passed
    assert not DryRun(SAMPLES)(view, good.replace(" * 1000", "")).passed


def dbt_model(tmp_path, text: str):
    """A dbt project declaring both datasets as sources, with one model."""
    root = tmp_path / "music"
    (root / "models").mkdir(parents=True)
    (root / "macros").mkdir()
    (root / "dbt_project.yml").write_text("name: music\nprofile: music\nvars: {min_ms: 1000}\n")
    (root / "profiles.yml").write_text("music: {target: dev, outputs: {dev: {type: duckdb, schema: dbt}}}\n")
    (root / "models" / "sources.yml").write_text(
        "sources:\n  - name: analytics\n    tables: [{name: plays}]\n"
        "  - name: analytics_v2\n    tables: [{name: plays}]\n")
    (root / "macros" / "s.sql").write_text("{% macro to_seconds(c) %}{{ c }} / 1000.0{% endmacro %}\n")
    model = root / "models" / "long_plays.sql"
    model.write_text(text)
    return request(text, consumer_id="music/models/long_plays.sql", dbt_project_root=str(root),
                   consumer_path=str(model))


DBT_MODEL = """\
select user_id, {{ to_seconds('ms_played') }} as seconds
from {{ source('analytics', 'plays') }}
where ms_played >= {{ var('min_ms') }}
"""


def test_dry_run_renders_dbt_models_through_their_project(tmp_path):
    model = dbt_model(tmp_path, DBT_MODEL)
    migrated = (DBT_MODEL.replace("select user_id", "select account_id as user_id")
                .replace("'ms_played'", "'CAST(duration_s * 1000 AS BIGINT)'")
                .replace("where ms_played", "where CAST(duration_s * 1000 AS BIGINT)")
                .replace("source('analytics', 'plays')", 'source("analytics_v2", "plays")'))
    result = DryRun(SAMPLES)(model, migrated)
    assert result.passed and not result.skipped, result.feedback
    wrong = DryRun(SAMPLES)(model, migrated.replace("{{ var('min_ms') }}", "0"))
    assert not wrong.passed and "1 only in new" in wrong.feedback  # the 500 ms play comes back
    unknown = DryRun(SAMPLES)(model, migrated.replace("to_seconds", "to_secs"))
    assert not unknown.passed and unknown.feedback.startswith("the new text does not render: cannot render Jinja")
    broken = dbt_model(tmp_path / "other", "select {{ nope() }}\n")
    skipped = DryRun(SAMPLES)(broken, migrated)
    assert skipped.skipped and skipped.feedback.startswith("the original does not render")


def test_dry_run_in_the_default_gate():
    verdict = default_gate(SAMPLES).verify(python_request(), PANDAS_MIGRATED)
    assert verdict.passed, verdict.feedback
    assert [(r.name, r.skipped) for r in verdict.results] == [
        ("unchanged", False), ("scope", True), ("locality", False), ("dry_run", True)]
    sql = default_gate(SAMPLES).verify(request(), CORRECT)
    assert sql.passed and [(r.name, r.skipped) for r in sql.results] == [
        ("unchanged", False), ("scope", False), ("locality", True), ("dry_run", False)]
    assert default_gate().verify(request(), CORRECT).results[-1].skipped  # no samples: cannot judge


# ---- samples read from the campaign's warehouse (skein.simulation.worlds) ------------------------

def warehouse_campaign(tmp_path, **simulation):
    """A DuckDB file warehouse with the source but not the target (the campaign's forward
    query builds it), 1000 plays of 100 users and one table no consumer reads."""
    import duckdb

    from skein.spec import Campaign

    path = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA analytics; "
                "CREATE TABLE analytics.plays AS SELECT range % 100 AS user_id, range * 10 AS ms_played, "
                "range % 7 = 0 AS legacy_flag FROM range(1000); "
                "CREATE TABLE analytics.users AS SELECT range AS user_id, "
                "CASE WHEN range % 2 = 0 THEN 'SE' ELSE 'DE' END AS country FROM range(100); "
                "CREATE TABLE analytics.tracks AS SELECT range AS track_id FROM range(10)")
    con.close()
    return Campaign.model_validate({
        "campaign": "c", "title": "t", "owners": ["o"], "warehouse": f"duckdb:///{path}",
        "source": "analytics.plays", "target": "analytics_v2.plays", "columns": COLUMNS,
        "forward": "SELECT user_id AS account_id, ms_played / 1000 AS duration_s FROM analytics.plays",
        "simulation": simulation})


def test_warehouse_samples_are_read_on_first_access_and_kept(tmp_path, monkeypatch):
    from skein.simulation.worlds import WarehouseSamples
    from skein.warehouse import DuckDBWarehouse

    later = tmp_path / "later"
    samples = WarehouseSamples(warehouse_campaign(tmp_path).model_copy(
        update={"warehouse": f"duckdb:///{later / 'wh.duckdb'}"}))  # no file there yet
    later.mkdir()
    warehouse_campaign(later)
    queries: list[str] = []
    read = DuckDBWarehouse.read
    monkeypatch.setattr(DuckDBWarehouse, "read", lambda self, sql: queries.append(sql) or read(self, sql))

    assert "analytics.users" in samples and "analytics_v2.plays" in samples  # forward builds it
    assert "analytics.nope" not in samples and len(samples) == 4
    assert queries == []  # the catalog only
    users = samples["analytics.users"]
    assert users.num_rows == 100 and samples["Analytics.Users"] is users
    reads = len(queries)
    assert samples["analytics.users"] is users and len(queries) == reads  # kept, not read again
    with pytest.raises(KeyError):
        samples["analytics.nope"]
    assert repr(samples) == "WarehouseSamples('c', read=['analytics.users'])"


def test_warehouse_samples_sample_by_key_hash_like_the_simulation(tmp_path):
    import duckdb

    from skein.simulation.worlds import WarehouseSamples

    campaign = warehouse_campaign(tmp_path, sample_rows=200, sample_keys={"analytics.plays": ["user_id"]})
    samples = WarehouseSamples(campaign)
    plays, target = samples["analytics.plays"], samples["analytics_v2.plays"]
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    # 1000 rows, 200 per sample: 5 buckets, the users hashing into bucket 0 kept
    kept = {r[0] for r in con.sql("SELECT DISTINCT user_id FROM analytics.plays t "
                                  "WHERE hash(t.user_id) % 5 = 0").fetchall()}
    con.close()
    assert 0 < plays.num_rows < 1000 and set(plays.column("user_id").to_pylist()) == kept
    assert plays.num_rows == 10 * len(kept)  # every play of a kept user
    # the target is built by the forward query from the sampled source: the same users
    assert target.column_names == ["account_id", "duration_s"] and target.num_rows == plays.num_rows
    assert set(target.column("account_id").to_pylist()) == kept
    assert samples["analytics.users"].num_rows == 100  # under sample_rows: whole


def test_dry_run_on_warehouse_samples(tmp_path):
    from skein.simulation.worlds import WarehouseSamples

    campaign = warehouse_campaign(tmp_path, sample_rows=200, sample_keys={"analytics.plays": ["user_id"]},
                                  rel_tol=1e-6)
    samples = WarehouseSamples(campaign)
    dry_run = DryRun(samples)
    assert dry_run.simulation is campaign.simulation
    result = dry_run(request(), CORRECT)
    assert result.passed and not result.skipped, result.feedback
    wrong = dry_run(request(), CORRECT.replace("p.duration_s * 1000 AS", "p.duration_s * 100 AS"))
    assert not wrong.passed and wrong.feedback.startswith("rows differ on the sample")
    assert "analytics.tracks" not in repr(samples)  # read only what the texts name
    assert default_gate(samples).verify(request(), CORRECT).passed
