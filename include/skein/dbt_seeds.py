"""The columns of a dbt seed from its CSV file, typed by DuckDB's CSV sniffer (the same
reader ``dbt seed`` with dbt-duckdb ends up loading into), with the seed's ``column_types``
config winning over the sniffed type, as in dbt.

>>> import tempfile, pathlib
>>> csv = pathlib.Path(tempfile.mkdtemp()) / "items.csv"
>>> _ = csv.write_text("id,name,price,ds\\n1,sushi,2.5,2024-01-01\\n")
>>> [(c.name, c.data_type) for c in seed_columns(csv, {"column_types": "{'price': 'decimal(10,2)'}"})]
[('id', 'BIGINT'), ('name', 'VARCHAR'), ('price', 'decimal(10,2)'), ('ds', 'DATE')]
"""

from __future__ import annotations

import ast
from pathlib import Path

import duckdb

from skein.dbt_manifest import Column


def seed_columns(csv: Path, config: dict[str, str]) -> tuple[Column, ...]:
    """Columns of the seed at ``csv``; none when DuckDB cannot read it (reported upstream as
    unknown columns, never as an error of the project)."""
    if not csv.is_file():
        return ()
    overrides = _literal(config.get("column_types"))
    options = {"delim": config["delimiter"]} if config.get("delimiter") else {}
    # An in-memory database with one thread and a small memory limit: a seed is a small file,
    # and a hostile one must not take the machine.
    with duckdb.connect(config={"threads": 1, "memory_limit": "256MB"}) as con:
        try:
            rows = con.execute("DESCRIBE SELECT * FROM read_csv(?, header = true"
                               + "".join(f", {k} = ?" for k in options) + ")",
                               [str(csv), *options.values()]).fetchall()
        except duckdb.Error:
            return ()
    lowered = {str(k).lower(): str(v) for k, v in overrides.items()}
    return tuple(Column(name, lowered.get(name.lower(), kind)) for name, kind, *_ in rows)


def _literal(text: str | None) -> dict:
    """The config value the manifest gave as text (a dict repr), else {}."""
    if not text:
        return {}
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}
    return value if isinstance(value, dict) else {}
