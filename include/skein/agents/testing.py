"""Helpers for the agents' doctest examples and tests."""

from __future__ import annotations

from skein.rewrite.edits import apply_edits
from skein.rewrite.request import RewriteRequest


def rule_patch(request: RewriteRequest):
    """The rule agent's parsed original, edits and patched text, before any check."""
    from skein.agents.rule import plan_edits

    parsed, edits = plan_edits(request)
    return parsed, edits, apply_edits(request.text, edits)
