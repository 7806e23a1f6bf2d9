"""TPC-H (22 queries): migrations of ``lineitem`` and ``orders``; every query that reads
the migrated table, rewritten by the rule agent, returns the original's rows."""

from __future__ import annotations

import pytest

from parity.harness import run_migration
from parity.migrations import TPCH


@pytest.mark.parametrize("migration", TPCH, ids=lambda m: m.name)
def test_rewritten_queries_return_the_original_rows(migration, baseline, rule_rewrite, record_summary):
    summary = run_migration(baseline("tpch"), migration, rule_rewrite)
    record_summary(summary)
    assert summary.reading, "no query reads the migrated table: the harness is broken"
    assert summary.ok, summary.problems()
