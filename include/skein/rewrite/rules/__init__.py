"""Rewrite rules, applied in this order. Each takes the text, the resolved references
and the change, and returns edits (or raises ``Escalate`` with a reason)."""

from skein.rewrite.rules.columns import map_columns
from skein.rewrite.rules.output_names import keep_output_names
from skein.rewrite.rules.stars import expand_stars
from skein.rewrite.rules.tables import retarget_tables
from skein.rewrite.rules.using import rewrite_using

RULES = (retarget_tables, map_columns, expand_stars, rewrite_using, keep_output_names)

__all__ = ["RULES", "retarget_tables", "map_columns", "expand_stars", "rewrite_using",
           "keep_output_names"]
