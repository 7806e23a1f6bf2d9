"""Type expectations, checked against the engine's schema (DuckDB ``DESCRIBE``), not with GX:
on pandas 3, GX type expectations see pandas dtypes (``str``, ``float64`` for an integer
column with nulls), not the warehouse's types.

>>> import pyarrow as pa
>>> types = dict(output_types(pa.table({"user_id": pa.array([1], pa.int32())})))
>>> types
{'user_id': 'INTEGER'}
>>> type_check("ExpectColumnValuesToBeOfType", {"column": "user_id", "type_": "int"}, types, "duckdb")
(True, 'INTEGER')
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

TYPE_CHECKS = ("ExpectColumnValuesToBeOfType", "ExpectColumnValuesToBeInTypeList")


def output_types(table: pa.Table) -> list[tuple[str, str]]:
    """(column, DuckDB type) of every column of ``table``, in order."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.register("_skein_output", table)
        return [(r[0], r[1]) for r in con.sql("DESCRIBE SELECT * FROM _skein_output").fetchall()]
    finally:
        con.close()


def type_check(expectation: str, kwargs: dict[str, Any], types: dict[str, str],
               dialect: str) -> tuple[bool, str]:
    """``(success, observed)`` of one of the ``TYPE_CHECKS``: whether the column's engine type
    is ``type_`` (or one of ``type_list``), read in ``dialect``; observed is that type, or
    what is wrong with the arguments."""
    column = kwargs.get("column")
    wanted = [kwargs.get("type_")] if expectation == TYPE_CHECKS[0] else kwargs.get("type_list")
    if column not in types:
        return False, f"no column {column!r}"
    if not wanted or not all(isinstance(w, str) for w in wanted):
        return False, "bad arguments: type_ / type_list must name types"
    actual = types[column]
    return any(same_type(w, actual, dialect) for w in wanted), actual


_SAME = {"TEXT": "VARCHAR", "CHAR": "VARCHAR", "NCHAR": "VARCHAR", "NVARCHAR": "VARCHAR",
         "BPCHAR": "VARCHAR", "NAME": "VARCHAR"}


def same_type(declared: str, actual: str, dialect: str = "duckdb") -> bool:
    """Whether a declared type (in ``dialect``) names the engine's type (DuckDB's spelling).
    Without parameters, the declared type matches any width: ``decimal`` ~ ``DECIMAL(12,3)``.

    >>> same_type("int", "INTEGER"), same_type("text", "VARCHAR"), same_type("bigint", "INTEGER")
    (True, True, False)
    >>> same_type("int8", "BIGINT", "postgres"), same_type("numeric(12,3)", "DECIMAL(12,3)")
    (True, True)
    """
    from sqlglot import exp
    from sqlglot.errors import ParseError

    try:
        a = exp.DataType.build(declared, dialect=dialect)
        b = exp.DataType.build(actual, dialect="duckdb")
    except (ParseError, ValueError):
        return declared.strip().upper() == actual.strip().upper()
    name_a, name_b = (_SAME.get(t.this.value, t.this.value) for t in (a, b))
    if name_a != name_b:
        return False
    return not a.expressions or a.sql("duckdb") == b.sql("duckdb")
