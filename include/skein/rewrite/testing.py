"""A tiny catalog for the rules' doctest examples (tests use real fixtures)."""

from __future__ import annotations

import sqlglot

from skein.rewrite.request import RewriteRequest
from skein.lineage import SchemaCache
from skein.rewrite.edits import apply_edits
from skein.rewrite.references import find_references
from skein.rewrite.rules.context import RuleContext

EXAMPLE_SCHEMAS = {
    "analytics.plays": {"play_id": "BIGINT", "user_id": "BIGINT", "ms_played": "BIGINT",
                        "legacy_flag": "BOOLEAN"},
    "analytics.users": {"user_id": "BIGINT", "country": "VARCHAR", "plan": "VARCHAR"},
    "analytics_v2.plays": {"play_id": "BIGINT", "account_id": "BIGINT", "duration_s": "DECIMAL(12,3)"},
}


def example_request(sql: str, columns: dict, dialect: str = "duckdb") -> RewriteRequest:
    return RewriteRequest(consumer_id="example.sql", text=sql, dialect=dialect,
                          source="analytics.plays", target="analytics_v2.plays", columns=columns,
                          schemas=EXAMPLE_SCHEMAS)


def run_rule(rule, sql: str, columns: dict, dialect: str = "duckdb") -> str:
    """Apply one rule to ``sql`` against ``EXAMPLE_SCHEMAS``: the text it produces."""
    request = example_request(sql, columns, dialect)
    statement = sqlglot.parse_one(sql, read=dialect)
    refs = find_references(statement, request.source, dialect, SchemaCache(request.schemas))
    return apply_edits(sql, rule(RuleContext(text=sql, request=request), refs))
