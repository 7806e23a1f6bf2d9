"""The verification gate: the Gate itself, each default check, and the DuckDB dry run.

The running example: ``analytics.plays(user_id, ms_played, legacy_flag)`` becomes
``analytics_v2.plays(account_id, duration_s)``; consumers also join ``analytics.users``,
which has a ``user_id`` of its own that must not be renamed.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from skein.rewrite.request import RewriteRequest
from skein.agents.gate import (
    CheckResult,
    DuckDBDryRun,
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
COLUMNS = {"user_id": "account_id", "ms_played": "duration_s * 1000", "legacy_flag": None}

SAMPLES = {
    "analytics.plays": [{"user_id": 1, "ms_played": 1500, "legacy_flag": False},
                        {"user_id": 1, "ms_played": 500, "legacy_flag": True},
                        {"user_id": 2, "ms_played": 2000, "legacy_flag": False}],
    "analytics_v2.plays": [{"account_id": 1, "duration_s": 1.5},
                           {"account_id": 1, "duration_s": 0.5},
                           {"account_id": 2, "duration_s": 2.0}],
    "analytics.users": [{"user_id": 1, "country": "SE"}, {"user_id": 2, "country": "DE"}],
}

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
    SUM(p.duration_s * 1000) AS total_ms
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


# ---- DuckDB dry run --------------------------------------------------------------------------------

def test_dry_run_passes_a_faithful_rewrite():
    result = DuckDBDryRun(SAMPLES)(request(), CORRECT)
    assert result.passed and not result.skipped, result.feedback


def test_dry_run_catches_a_renamed_output_column():
    result = DuckDBDryRun(SAMPLES)(request(), OUTPUT_RENAMED)
    assert not result.passed
    assert result.feedback == ("output columns differ: expected ['user_id', 'country', 'total_ms'], "
                               "got ['account_id', 'country', 'total_ms'] (keep names and order)")


def test_dry_run_catches_an_unrelated_column_renamed():
    result = DuckDBDryRun(SAMPLES)(request(), UNRELATED_TOUCHED)
    assert not result.passed
    assert result.feedback.startswith("the new query fails on analytics_v2.plays:")
    assert "account_id" in result.feedback


def test_dry_run_catches_different_rows():
    wrong = CORRECT.replace("SUM(p.duration_s * 1000)", "SUM(p.duration_s)")
    result = DuckDBDryRun(SAMPLES)(request(), wrong)
    assert not result.passed
    assert result.feedback.startswith("rows differ on the sample: 2 expected, 2 returned; "
                                      "first expected row not returned: ")


def test_dry_run_fails_a_leftover_source_reference():
    leftover = CORRECT.replace("JOIN analytics.users AS u ON u.user_id = p.account_id",
                               "JOIN analytics.plays AS old ON old.user_id = p.account_id\n"
                               "JOIN analytics.users AS u ON u.user_id = p.account_id")
    result = DuckDBDryRun(SAMPLES)(request(), leftover)
    assert not result.passed and "analytics.plays" in result.feedback


def test_dry_run_fails_text_that_does_not_parse():
    result = DuckDBDryRun(SAMPLES)(request(), "SELEC account_id FROM analytics_v2.plays WHERE (")
    assert not result.passed and result.feedback.startswith("the new text cannot be run:")


def test_dry_run_cannot_read_files():
    sneaky = "SELECT * FROM read_csv('/etc/passwd')"
    result = DuckDBDryRun(SAMPLES)(request(), sneaky)
    assert not result.passed and "Permission" in result.feedback


@pytest.mark.parametrize(("req", "samples", "why"), [
    (request(), {}, "no sample rows for analytics.plays, analytics_v2.plays"),
    (request(consumer_id="reports/weekly.py"), SAMPLES, "not SQL"),
    (request(), SAMPLES | {"analytics.other": []}, "schemas: analytics.other"),
    (request("SELECT no_such_column FROM analytics.plays"), SAMPLES,
     "the original fails on the sample"),
    (request("{% if x %}SELECT 1{% endif %}"), SAMPLES, "Jinja other than ref()/source()"),
    (request("DELETE FROM analytics.plays"), SAMPLES, "the last statement is a DELETE"),
    (request(schemas=SCHEMAS | {"analytics_v2.plays": dict.fromkeys(["account_id", "duration_s"],
                                                                    "UNKNOWN")}),
     SAMPLES, "cannot load the sample"),
])
def test_dry_run_skips_when_it_cannot_judge(req, samples, why):
    result = DuckDBDryRun(samples)(req, CORRECT)
    assert result.passed and result.skipped and why in result.feedback


def test_dry_run_runs_views_and_dbt_models():
    view = request("CREATE VIEW marts.listening AS\nSELECT user_id, ms_played FROM analytics.plays\n",
                   consumer_id="warehouse/marts.listening")
    good = ("CREATE VIEW marts.listening AS\n"
            "SELECT account_id AS user_id, duration_s * 1000 AS ms_played FROM analytics_v2.plays\n")
    assert DuckDBDryRun(SAMPLES)(view, good).passed
    assert not DuckDBDryRun(SAMPLES)(view, good.replace(" * 1000", "")).passed

    relations = {"source('analytics','plays')": "analytics.plays",
                 "source('analytics_v2','plays')": "analytics_v2.plays"}
    model = request("select user_id from {{ source('analytics', 'plays') }}\n",
                    dbt_relations=relations, consumer_id="music/models/a.sql")
    migrated = 'select account_id as user_id from {{ source("analytics_v2", "plays") }}\n'
    result = DuckDBDryRun(SAMPLES)(model, migrated)
    assert result.passed and not result.skipped, result.feedback


def test_dry_run_in_the_default_gate():
    verdict = default_gate(SAMPLES).verify(python_request(), PANDAS_MIGRATED)
    assert verdict.passed, verdict.feedback
    assert [(r.name, r.skipped) for r in verdict.results] == [
        ("unchanged", False), ("scope", True), ("locality", False), ("dry_run", True)]
