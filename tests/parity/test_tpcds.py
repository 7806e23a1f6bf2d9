"""TPC-DS (99 queries): migrations of ``store_sales`` and ``web_sales``; every query that
reads the migrated table, rewritten by the rule agent, returns the original's rows."""

from __future__ import annotations

import pytest

from parity.harness import run_migration
from parity.migrations import TPCDS

# ~25 s on 2 cores, most of it the rule agent resolving 99 TPC-DS queries per migration.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("migration", TPCDS, ids=lambda m: m.name)
def test_rewritten_queries_return_the_original_rows(migration, baseline, rule_rewrite, record_summary):
    summary = run_migration(baseline("tpcds"), migration, rule_rewrite)
    record_summary(summary)
    assert summary.reading, "no query reads the migrated table: the harness is broken"
    assert summary.ok, summary.problems()
