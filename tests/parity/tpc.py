"""TPC-H and TPC-DS at a small scale: data from ``tpcgen-cli``, queries from ``queries/``.

DuckDB's own tpch/tpcds extensions cannot be loaded by the DuckDB version Skein uses (the
PyPI wheels ``duckdb-extension-tpch``/``-tpcds`` stop at 1.5.x, and loading them into 2.x
crashes), so the data comes from ``tpcgen-cli`` (PyPI, Apache-2.0: a Rust TPC-H/TPC-DS
generator shipped as a binary in its wheel) and the query texts are shipped in
``queries/*.sql`` (see the header of each file for their source).

>>> q = load_queries("tpch")
>>> len(q), q["q06"].split()[:2]
(22, ['SELECT', 'sum(l_extendedprice'])
>>> len(load_queries("tpcds"))
99
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb

QUERIES = Path(__file__).with_name("queries")
BENCHMARKS = ("tpch", "tpcds")
# Small enough for the whole suite to run in well under a minute on 2 cores, large enough
# that nearly every query returns rows.
SCALE = {"tpch": "0.01", "tpcds": "0.01"}
GENERATOR = "tpcgen-cli"
GENERATOR_REQUIREMENT = "tpcgen-cli==4.0.0"


class GeneratorMissing(RuntimeError):
    pass


def load_queries(benchmark: str) -> dict[str, str]:
    """Query name (``q01``...) -> query text, in file order."""
    text = (QUERIES / f"{benchmark}.sql").read_text()
    parts = re.split(r"^-- name: (\w+)\n", text, flags=re.M)[1:]
    return {name: body.strip() + "\n" for name, body in zip(parts[::2], parts[1::2])}


def generator_path() -> Path:
    """The ``tpcgen-cli`` binary: on PATH or next to this interpreter (a venv's bin/)."""
    found = shutil.which(GENERATOR) or shutil.which(GENERATOR, path=str(Path(sys.executable).parent))
    if not found:
        raise GeneratorMissing(f"{GENERATOR} not found on PATH nor in {Path(sys.executable).parent}: "
                               f"pip install {GENERATOR_REQUIREMENT}")
    return Path(found)


def generate(benchmark: str, out: Path, scale: str | None = None) -> Path:
    """Write every table of ``benchmark`` as ``out/<table>.parquet`` (deterministic)."""
    scale = scale or SCALE[benchmark]
    if not any(out.glob("*.parquet")):
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(generator_path()), benchmark, "parquet", "--scale-factor", scale,
                        "--output-dir", str(out)], check=True, capture_output=True, text=True,
                       env={**os.environ, "RAYON_NUM_THREADS": "2"})
    return out


def open_database(data: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory database with one table in ``main`` per parquet file."""
    con = duckdb.connect(":memory:")
    for path in sorted(data.glob("*.parquet")):
        con.execute(f'CREATE TABLE main."{path.stem}" AS FROM read_parquet(?)', [str(path)])
    return con


def table_schemas(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """``schema.table`` (lowercase) -> {column: exact DuckDB type}, for every base table."""
    rows = con.execute("""
        SELECT table_schema, table_name, column_name, data_type
        FROM information_schema.columns
        WHERE table_catalog = current_database()
        ORDER BY table_schema, table_name, ordinal_position""").fetchall()
    schemas: dict[str, dict[str, str]] = {}
    for schema, table, column, data_type in rows:
        schemas.setdefault(f"{schema}.{table}".lower(), {})[column] = data_type
    return schemas
