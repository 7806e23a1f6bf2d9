"""Compare two query results: same column names, same types, same rows as multisets.

Floats match within a relative tolerance, NULL matches NULL (and NaN matches NaN);
everything else (DECIMAL included) must be equal. Rows are compared sorted, so the
engine's choice of order for rows with equal sort keys never counts as a difference.

>>> a = Result(("x", "y"), ("INTEGER", "DOUBLE"), [(1, 0.1 + 0.2), (None, 2.0)])
>>> b = Result(("x", "y"), ("INTEGER", "DOUBLE"), [(None, 2.0), (1, 0.3)])
>>> difference(a, b) is None
True
>>> difference(a, Result(("x", "y"), ("BIGINT", "DOUBLE"), b.rows))
"types differ: ['INTEGER', 'DOUBLE'] vs ['BIGINT', 'DOUBLE']"
>>> difference(a, Result(a.columns, a.types, [(1, 0.3), (1, 0.3)]))
'rows differ: 1 only in original, 1 only in rewritten; e.g. original (None, 2.0) vs rewritten (1, 0.3)'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

REL_TOL = 1e-9
ABS_TOL = 1e-12
# Above this many rows, unmatched rows after sorting are reported without the slow
# pairwise search for a partner within tolerance.
PAIRWISE_LIMIT = 5_000


@dataclass(frozen=True)
class Result:
    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple]


def run(con, sql: str) -> Result:
    """Execute ``sql`` on a DuckDB connection and keep names, exact types and rows."""
    cursor = con.execute(sql)
    description = cursor.description or []
    rows = cursor.fetchall()
    return Result(tuple(d[0] for d in description), tuple(str(d[1]) for d in description), rows)


def difference(original: Result, rewritten: Result) -> str | None:
    """Why ``rewritten`` is not the same result as ``original``, or None when it is."""
    if list(original.columns) != list(rewritten.columns):
        return f"column names differ: {list(original.columns)} vs {list(rewritten.columns)}"
    if list(original.types) != list(rewritten.types):
        return f"types differ: {list(original.types)} vs {list(rewritten.types)}"
    if len(original.rows) != len(rewritten.rows):
        return f"row counts differ: {len(original.rows)} vs {len(rewritten.rows)}"
    left = sorted(original.rows, key=_row_key)
    right = sorted(rewritten.rows, key=_row_key)
    unmatched_left = [a for a, b in zip(left, right) if not same_row(a, b)]
    if not unmatched_left:
        return None
    # Values within tolerance may sort differently: match the leftovers pairwise.
    unmatched_right = [b for a, b in zip(left, right) if not same_row(a, b)]
    if len(unmatched_left) <= PAIRWISE_LIMIT:
        unmatched_left, unmatched_right = _match_pairwise(unmatched_left, unmatched_right)
        if not unmatched_left:
            return None
    return (f"rows differ: {len(unmatched_left)} only in original, {len(unmatched_right)} only in "
            f"rewritten; e.g. original {_short(unmatched_left[0])} vs rewritten "
            f"{_short(unmatched_right[0])}")


def same_row(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))


def same_value(a: Any, b: Any) -> bool:
    """
    >>> same_value(None, None), same_value(None, 0), same_value(float("nan"), float("nan"))
    (True, False, True)
    >>> same_value(1e10, 1e10 + 1e-3), same_value(1.0, 1.001), same_value(Decimal("1.10"), Decimal("1.1"))
    (True, False, True)
    """
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, (int, float, Decimal)) or not isinstance(b, (int, float, Decimal)):
            return False
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _match_pairwise(left: list[tuple], right: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    remaining = list(right)
    unmatched = []
    for row in left:
        for i, candidate in enumerate(remaining):
            if same_row(row, candidate):
                del remaining[i]
                break
        else:
            unmatched.append(row)
    return unmatched, remaining


def _row_key(row: tuple) -> tuple:
    return tuple(_value_key(v) for v in row)


def _value_key(v: Any) -> tuple:
    """A total order over mixed values: NULLs first, then by type name, then value.
    Floats are rounded so that values within tolerance usually sort together."""
    if v is None:
        return (0, "", "")
    if isinstance(v, float):
        if math.isnan(v):
            return (1, "float", "nan")
        return (1, "number", float(f"{v:.9g}"))
    if isinstance(v, (int, Decimal)) and not isinstance(v, bool):
        return (1, "number", float(v))
    if isinstance(v, (list, tuple)):
        return (2, "seq", tuple(_value_key(x) for x in v))
    if isinstance(v, dict):
        return (2, "map", tuple((k, _value_key(x)) for k, x in sorted(v.items())))
    try:
        v < v  # noqa: B015 - orderable?
        return (3, type(v).__name__, v)
    except TypeError:
        return (4, type(v).__name__, repr(v))


def _short(row: tuple, limit: int = 160) -> str:
    text = repr(row)
    return text if len(text) <= limit else text[: limit - 3] + "..."
