"""Read what the warehouse knows: dataset schemas and view definitions.

One small interface so that DuckDB (the embedded default) and PostgreSQL can sit
behind it. Dataset names are ``schema.table``, lowercased: Skein compares names
case-insensitively across dialects (see docs/discovery.md).

>>> import duckdb, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "w.duckdb")
>>> con = duckdb.connect(path)
>>> _ = con.execute("CREATE SCHEMA a; CREATE TABLE a.t (x INT, y VARCHAR); "
...                 "CREATE VIEW a.v AS SELECT x FROM a.t; COMMENT ON VIEW a.v IS 'owner=me tier=1'")
>>> con.close()
>>> wh = open_warehouse(f"duckdb:///{path}")
>>> wh.schemas()["a.t"]
{'x': 'INTEGER', 'y': 'VARCHAR'}
>>> [(v.name, v.comment) for v in wh.views()]
[('a.v', 'owner=me tier=1')]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from skein.errors import WarehouseError


@dataclass(frozen=True)
class WarehouseView:
    name: str  # schema.view, lowercased
    sql: str  # the full CREATE VIEW statement, as the warehouse reports it
    comment: str | None


class Warehouse(Protocol):
    url: str
    dialect: str
    default_schema: str

    def schemas(self) -> dict[str, dict[str, str]]:
        """``schema.table`` -> ordered ``{column: type}`` for every table and view."""

    def views(self) -> list[WarehouseView]:
        """User-defined views, sorted by name."""


def open_warehouse(url: str, base_dir: Path | None = None) -> Warehouse:
    """The warehouse behind ``url``; relative DuckDB paths are relative to ``base_dir``."""
    scheme, _, rest = url.partition("://")
    if scheme == "duckdb":
        path = rest[1:] if rest.startswith("/") else rest  # duckdb:///rel  duckdb:////abs
        file = Path(path)
        if not file.is_absolute():
            file = (base_dir or Path.cwd()) / file
        return DuckDBWarehouse(url, file)
    raise WarehouseError(f"warehouse {url!r}: only duckdb:/// warehouses can be read so far")


class DuckDBWarehouse:
    dialect = "duckdb"
    default_schema = "main"

    def __init__(self, url: str, file: Path):
        self.url = url
        self.file = file
        if not file.exists():
            raise WarehouseError(f"warehouse {url!r}: DuckDB file {file} does not exist")

    def _connect(self):
        import duckdb

        try:
            return duckdb.connect(str(self.file), read_only=True)
        except duckdb.Error as exc:
            raise WarehouseError(f"warehouse {self.url!r}: cannot open {self.file}: {exc}") from None

    def schemas(self) -> dict[str, dict[str, str]]:
        con = self._connect()
        try:
            rows = con.sql(
                "SELECT table_schema, table_name, column_name, data_type "
                "FROM information_schema.columns "
                "WHERE table_catalog = current_database() "
                "AND table_schema NOT IN ('information_schema', 'pg_catalog') "
                "ORDER BY table_schema, table_name, ordinal_position").fetchall()
        finally:
            con.close()
        out: dict[str, dict[str, str]] = {}
        for schema, table, column, data_type in rows:
            out.setdefault(f"{schema}.{table}".lower(), {})[column.lower()] = data_type
        return out

    def views(self) -> list[WarehouseView]:
        con = self._connect()
        try:
            rows = con.sql(
                "SELECT schema_name, view_name, sql, comment FROM duckdb_views() "
                "WHERE NOT internal AND database_name = current_database() "
                "ORDER BY schema_name, view_name").fetchall()
        finally:
            con.close()
        return [WarehouseView(f"{s}.{v}".lower(), sql, comment or None) for s, v, sql, comment in rows]
