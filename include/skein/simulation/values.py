"""Values from data engines (numpy scalars, NaN, decimals, timestamps) as JSON-safe Python."""

from __future__ import annotations

import math
from typing import Any


def json_value(value: Any) -> Any:
    """JSON-safe: mappings and sequences element by element (keys as strings), numpy
    scalars to Python, NaN to None, anything else not a JSON scalar to its string.

    >>> import datetime, decimal
    >>> json_value({"n": float("nan"), 1: (decimal.Decimal("1.50"), datetime.date(2024, 1, 2))})
    {'n': None, '1': ['1.50', '2024-01-02']}
    >>> import numpy as np
    >>> json_value([np.int64(3), np.float64(0.5), np.bool_(True)])
    [3, 0.5, True]
    """
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_value(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()  # numpy scalar
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
