"""The parity harness itself: it passes a correct rewrite, and catches every kind of wrong
one (different rows, a forgotten reference, changed types or names, a lossy migration),
without depending on the rule agent."""

from __future__ import annotations

import pytest

from parity.compare import Result, difference
from parity.harness import make_baseline, migrated, run_migration
from parity.migrations import Migration
from parity.tpc import load_queries
from skein.rewrite.request import Escalation, Patch

RETYPE = Migration("discount-pct", "main.lineitem", "main.lineitem_v2",
                   forward={"discount_pct": "CAST(l_discount * 100 AS INTEGER)"},
                   columns={"l_discount": "CAST(discount_pct / 100 AS DECIMAL(15,2))"})
RIGHT = "CAST(discount_pct / 100 AS DECIMAL(15,2))"


@pytest.fixture(scope="module")
def small(tpc_data):
    """TPC-H with two queries reading lineitem (q06, q14) and one that does not (q02)."""
    queries = {k: v for k, v in load_queries("tpch").items() if k in ("q02", "q06", "q14")}
    baseline = make_baseline("tpch", tpc_data("tpch"), queries)
    yield baseline
    baseline.close()


def text_rewrite(discount: str, table: str = "main.lineitem_v2"):
    """A stand-in agent that edits text: correct only for the exact expressions given."""

    def rewrite(request):
        text = request.text.replace("l_discount", discount).replace("    lineitem", f"    {table}")
        return Patch(consumer_id=request.consumer_id, agent="test", original=request.text,
                     text=text, changes=[])

    return rewrite


def test_a_correct_rewrite_matches(small):
    summary = run_migration(small, RETYPE, text_rewrite(RIGHT))
    assert summary.ok, summary.problems()
    assert summary.reading == ["q06", "q14"]
    assert summary.matching == ["q06", "q14"] and summary.nonempty_results == 2


def test_different_rows_are_a_mismatch(small):
    summary = run_migration(small, RETYPE, text_rewrite("CAST(discount_pct AS DECIMAL(15,2))"))
    assert not summary.ok
    assert set(summary.mismatches) == {"q06", "q14"}
    assert summary.mismatches["q06"].startswith("rows differ")


def test_a_forgotten_reference_to_the_source_fails_loudly(small):
    summary = run_migration(small, RETYPE, text_rewrite(RIGHT, table="lineitem"))
    assert "Catalog Error" in summary.mismatches["q06"] or "does not exist" in summary.mismatches["q06"]


def test_a_type_change_is_a_mismatch(small):
    summary = run_migration(small, RETYPE, text_rewrite("discount_pct / 100"))
    assert summary.mismatches["q06"].startswith("types differ")


def test_escalations_and_crashes_are_reported(small):
    def escalate(request):
        if request.consumer_id.endswith("q06.sql"):
            return Escalation(consumer_id=request.consumer_id, agent="test", reason="no rule for it")
        raise RuntimeError("boom")

    summary = run_migration(small, RETYPE, escalate)
    assert summary.escalations == {"q06": "no rule for it"}
    assert summary.crashes == {"q14": "RuntimeError: boom"}
    assert "ESCALATED q06: no rule for it" in summary.problems()
    expected = Migration(**{**RETYPE.__dict__, "expected_escalations": frozenset({"q06"})})
    assert run_migration(small, expected, escalate).unexpected_escalations == {}


def test_a_lossy_migration_is_refused_before_any_query(small):
    lossy = Migration("lossy", "main.lineitem", "main.lineitem_v2",
                      forward={"discount_pct": "CAST(l_discount * 10 AS INTEGER)"},
                      columns={"l_discount": "CAST(discount_pct / 10 AS DECIMAL(15,2))"})
    with pytest.raises(AssertionError, match="lossy"):
        run_migration(small, lossy, text_rewrite(RIGHT))
    retyped = Migration("retyped", "main.lineitem", "main.lineitem_v2",
                        forward={"discount_pct": "CAST(l_discount * 100 AS INTEGER)"},
                        columns={"l_discount": "discount_pct / 100"})
    with pytest.raises(AssertionError, match="changes types"):
        run_migration(small, retyped, text_rewrite(RIGHT))


def test_the_database_is_restored_after_each_migration(small):
    before = small.con.execute("SELECT count(*), sum(l_discount) FROM main.lineitem").fetchall()
    with pytest.raises(ZeroDivisionError):
        with migrated(small, RETYPE):
            assert not small.con.execute(
                "SELECT * FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'lineitem'"
            ).fetchall()
            raise ZeroDivisionError
    assert small.con.execute("SELECT count(*), sum(l_discount) FROM main.lineitem").fetchall() == before
    assert not small.con.execute("SELECT * FROM duckdb_tables() WHERE table_name = 'lineitem_v2'").fetchall()


def test_output_names_are_part_of_the_result():
    a = Result(("sum(l_quantity)",), ("DECIMAL(38,2)",), [(1,)])
    b = Result(("sum(quantity)",), ("DECIMAL(38,2)",), [(1,)])
    assert difference(a, b).startswith("column names differ")
