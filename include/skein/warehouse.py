"""Read what the warehouse knows: dataset schemas, view definitions and data.

One small interface so that DuckDB (the embedded default) and PostgreSQL sit behind
it: discovery reads ``schemas()`` and ``views()``, the simulation reads samples with
``row_count()`` and ``read()`` (an Arrow table, whatever the engine). Dataset names are
``schema.table``, lowercased: Skein compares names case-insensitively across dialects
(see docs/discovery.md). Every call opens its own read-only connection.

A warehouse's views are other teams' SQL, run whenever Skein reads them, so every DuckDB
connection is the sandbox's (``skein.simulation.sandbox``): no file or network access, no
extensions, configuration locked, and ``ReadLimits``' memory, threads and time limit. A view
over ``read_text('/secret')`` is refused (``WarehouseError``), never read.

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
>>> wh.row_count("a.t"), wh.read("SELECT * FROM a.t").num_rows
(0, 0)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit, urlunsplit

from skein.errors import WarehouseError, first_line

if TYPE_CHECKING:
    import pyarrow


@dataclass(frozen=True)
class WarehouseView:
    name: str  # schema.view, lowercased
    sql: str  # the full CREATE VIEW statement, as the warehouse reports it
    comment: str | None


@dataclass(frozen=True)
class ReadLimits:
    """What one warehouse read may cost: the sandbox's limits (a campaign's ``simulation``).

    >>> ReadLimits().timeout_s, ReadLimits.of(type("S", (), {"memory_limit": "2GB", "timeout_s": 5})())
    (60.0, ReadLimits(memory_limit='2GB', threads=1, timeout_s=5))
    """

    memory_limit: str = "1GB"
    threads: int = 1
    timeout_s: float = 60.0

    @classmethod
    def of(cls, settings) -> "ReadLimits":
        """The limits of a campaign's ``simulation`` settings."""
        return cls(memory_limit=settings.memory_limit, timeout_s=settings.timeout_s)


# What the sandbox locks (skein.simulation.sandbox.Sandbox.lock), set before the file opens:
# a view's SQL then cannot read files or URLs, attach databases, load extensions or secrets,
# nor switch any of this back on.
LOCKED_DOWN = {"enable_external_access": False, "autoinstall_known_extensions": False,
               "autoload_known_extensions": False, "allow_persistent_secrets": False,
               "lock_configuration": True}


class Warehouse(Protocol):
    url: str
    dialect: str
    default_schema: str

    def schemas(self) -> dict[str, dict[str, str]]:
        """``schema.table`` -> ordered ``{column: type}`` for every table and view."""

    def views(self) -> list[WarehouseView]:
        """User-defined views, sorted by name."""

    def row_count(self, name: str) -> int:
        """Rows in dataset ``schema.table``."""

    def read(self, sql: str) -> "pyarrow.Table":
        """The rows of one query, in the warehouse's dialect, as an Arrow table."""


def open_warehouse(url: str, base_dir: Path | None = None,
                   limits: ReadLimits | None = None) -> Warehouse:
    """The warehouse behind ``url``; relative DuckDB paths are relative to ``base_dir``.
    ``limits``: of every read (default: the sandbox's defaults)."""
    scheme, _, rest = url.partition("://")
    if scheme == "duckdb":
        return DuckDBWarehouse(url, duckdb_file(url, base_dir), limits or ReadLimits())
    if scheme in ("postgresql", "postgres"):
        return PostgresWarehouse(url, limits=limits or ReadLimits())
    raise WarehouseError(f"warehouse {redact_url(url)!r}: use duckdb:/// or postgresql:// URLs")


def postgres_view_ddl(schema: str, view: str, definition: str) -> str:
    """A PostgreSQL view as DDL (``pg_views`` holds the SELECT only): the text consumers are
    analysed, patched and hashed as.

    >>> postgres_view_ddl("rpt", "v", " SELECT 1;")
    'CREATE VIEW "rpt"."v" AS\\nSELECT 1'
    """
    body = definition.strip().rstrip(";").strip()
    return f"CREATE VIEW {quoted_table(f'{schema}.{view}', 'postgres')} AS\n{body}"


def duckdb_file(url: str, base_dir: Path | None = None) -> Path:
    """The file of a ``duckdb:///rel`` or ``duckdb:////abs`` URL.

    >>> duckdb_file("duckdb:///w.duckdb", Path("/c")), duckdb_file("duckdb:////abs/w.duckdb")
    (PosixPath('/c/w.duckdb'), PosixPath('/abs/w.duckdb'))
    """
    rest = url.partition("://")[2]
    file = Path(rest[1:] if rest.startswith("/") else rest)
    return file if file.is_absolute() else (base_dir or Path.cwd()) / file


def is_duckdb_file(file: Path) -> bool:
    """Whether ``file`` starts like a DuckDB database (its header holds ``DUCK`` at byte 8):
    DuckDB itself would say so only on first use, in the middle of a campaign step.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "w.duckdb"
    >>> _ = f.write_text("id,name\\n1,a\\n")
    >>> is_duckdb_file(f)
    False
    """
    try:
        with open(file, "rb") as handle:
            return handle.read(12)[8:12] == b"DUCK"
    except OSError:
        return False


def redact_url(url: str) -> str:
    """``url`` without its password, for messages.

    >>> redact_url("postgresql://me:secret@db:5432/wh")
    'postgresql://me@db:5432/wh'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


def quoted_table(name: str, dialect: str) -> str:
    """``schema.table`` as SQL for ``dialect``, every part quoted, never pasted raw.

    >>> quoted_table('analytics.plays', 'postgres')
    '"analytics"."plays"'
    """
    from sqlglot import exp

    table = exp.to_table(name)
    for part in table.parts:
        part.set("quoted", True)
    return table.sql(dialect=dialect)


class DuckDBWarehouse:
    dialect = "duckdb"
    default_schema = "main"

    def __init__(self, url: str, file: Path, limits: ReadLimits = ReadLimits()):
        self.url = url
        self.file = file
        self.limits = limits
        if not file.exists():
            raise WarehouseError(f"warehouse {url!r}: DuckDB file {file} does not exist")
        if not file.is_file():
            raise WarehouseError(f"warehouse {url!r}: {file} is a folder, not a DuckDB file")
        if not is_duckdb_file(file):
            raise WarehouseError(f"warehouse {url!r}: {file} is not a DuckDB database file")

    def _connect(self, wait_s: float = 60.0):
        """A read-only, locked-down connection (``LOCKED_DOWN``, ``limits``). A DuckDB file
        has one writer at a time and a writer shuts readers out: while another campaign
        replaces a view (a transaction of a second or so), wait for it instead of failing
        this campaign's read."""
        import time

        import duckdb

        config = {**LOCKED_DOWN, "memory_limit": self.limits.memory_limit,
                  "threads": self.limits.threads}
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return duckdb.connect(str(self.file), read_only=True, config=config)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise WarehouseError(f"warehouse {self.url!r}: cannot open {self.file}: "
                                         f"{first_line(exc)}") from None
                time.sleep(0.2)
            except duckdb.Error as exc:
                raise WarehouseError(f"warehouse {self.url!r}: cannot open {self.file}: "
                                     f"{first_line(exc)}") from None

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

    def row_count(self, name: str) -> int:
        return self.read(f"SELECT count(*) AS n FROM {quoted_table(name, self.dialect)}").column(0)[0].as_py()

    def read(self, sql: str) -> "pyarrow.Table":
        """The rows of ``sql``, interrupted at the time limit; a refusal (a view reading a
        file), a time limit or any other DuckDB error is a ``WarehouseError`` saying so."""
        import duckdb

        con = self._connect()
        timer = threading.Timer(self.limits.timeout_s, con.interrupt)
        timer.start()
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.InterruptException:
            raise WarehouseError(f"warehouse {self.url!r}: stopped at its time limit "
                                 f"({self.limits.timeout_s:g} s)") from None
        except duckdb.Error as exc:
            raise WarehouseError(f"warehouse {self.url!r}: {type(exc).__name__}: "
                                 f"{first_line(exc)}") from None
        finally:
            timer.cancel()
            con.close()


_PG_SYSTEM_SCHEMAS = "('information_schema', 'pg_catalog', 'pg_toast')"


class PostgresWarehouse:
    """A PostgreSQL database, read through psycopg2 in read-only sessions.

    ``url`` keeps no password (it names the warehouse in messages); the connection uses
    the full URL. Opening checks that the server answers.
    """

    dialect = "postgres"
    default_schema = "public"

    def __init__(self, url: str, connect_timeout_s: int = 10, limits: ReadLimits = ReadLimits()):
        self.url = redact_url(url)
        self._dsn = url
        self._timeout = connect_timeout_s
        self.limits = limits
        self._connect().close()

    def _connect(self):
        try:
            import psycopg2
        except ImportError:
            raise WarehouseError(f"warehouse {self.url!r}: reading PostgreSQL needs psycopg2 "
                                 "(pip install psycopg2-binary)") from None
        try:
            # The server runs its views with its own privileges; the session only reads, and
            # each statement ends at the sandbox's time limit.
            timeout_ms = max(1, int(self.limits.timeout_s * 1000))
            con = psycopg2.connect(self._dsn, connect_timeout=self._timeout,
                                   options=f"-c TimeZone=UTC -c statement_timeout={timeout_ms}",
                                   application_name="skein")
            con.set_session(readonly=True, autocommit=True)
        except psycopg2.Error as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WarehouseError(f"warehouse {self.url!r}: cannot connect to PostgreSQL: "
                                 f"{reason.replace(self._dsn, self.url)}") from None
        return con

    def _rows(self, sql: str):
        con = self._connect()
        try:
            with con.cursor() as cur:
                cur.execute(sql)
                return cur.description, cur.fetchall()
        except Exception as exc:
            import psycopg2

            if not isinstance(exc, psycopg2.Error):
                raise
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WarehouseError(f"warehouse {self.url!r}: {reason}") from None
        finally:
            con.close()

    def schemas(self) -> dict[str, dict[str, str]]:
        _, rows = self._rows(
            "SELECT table_schema, table_name, column_name, data_type "
            "FROM information_schema.columns "
            f"WHERE table_schema NOT IN {_PG_SYSTEM_SCHEMAS} AND table_schema NOT LIKE 'pg\\_temp\\_%' "
            "ORDER BY table_schema, table_name, ordinal_position")
        out: dict[str, dict[str, str]] = {}
        for schema, table, column, data_type in rows:
            out.setdefault(f"{schema}.{table}".lower(), {})[column.lower()] = data_type
        return out

    def views(self) -> list[WarehouseView]:
        _, rows = self._rows(
            "SELECT v.schemaname, v.viewname, v.definition, obj_description(c.oid, 'pg_class') "
            "FROM pg_views v JOIN pg_namespace n ON n.nspname = v.schemaname "
            "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = v.viewname "
            f"WHERE v.schemaname NOT IN {_PG_SYSTEM_SCHEMAS} ORDER BY 1, 2")
        views = []
        for schema, view, definition, comment in rows:
            sql = postgres_view_ddl(schema, view, definition)
            views.append(WarehouseView(f"{schema}.{view}".lower(), sql, comment or None))
        return sorted(views, key=lambda v: v.name)

    def row_count(self, name: str) -> int:
        _, rows = self._rows(f"SELECT count(*) FROM {quoted_table(name, self.dialect)}")
        return rows[0][0]

    def read(self, sql: str) -> "pyarrow.Table":
        import pyarrow as pa

        description, rows = self._rows(sql)
        columns = list(zip(*rows)) if rows else [() for _ in description]
        arrays = [_arrow_column(values, col) for values, col in zip(columns, description)]
        return pa.Table.from_arrays(arrays, names=[col.name for col in description])


def _arrow_column(values, column):
    """One result column as an Arrow array, typed from the PostgreSQL type (OID) so that
    empty and all-NULL columns keep their type; numerics without a precision DuckDB can
    hold become doubles (as DuckDB's own postgres scanner does)."""
    import json

    import pyarrow as pa

    oid = column.type_code
    simple = {16: pa.bool_(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 26: pa.int64(),
              700: pa.float32(), 701: pa.float64(), 25: pa.string(), 1043: pa.string(),
              1042: pa.string(), 19: pa.string(), 18: pa.string(), 2950: pa.string(),
              1082: pa.date32(), 1083: pa.time64("us"), 1114: pa.timestamp("us"),
              1184: pa.timestamp("us", tz="UTC"), 1186: pa.duration("us"), 17: pa.binary()}
    if oid == 1700:
        precision, scale = column.precision, column.scale
        if precision is not None and 0 < precision <= 38 and scale is not None and scale >= 0:
            return pa.array(values, type=pa.decimal128(precision, scale))
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    if oid in (114, 3802):  # json, jsonb: psycopg2 parses them; keep the JSON text
        return pa.array([None if v is None else json.dumps(v) for v in values], type=pa.string())
    if oid == 17:
        values = [None if v is None else bytes(v) for v in values]
    if oid in simple:
        return pa.array(values, type=simple[oid])
    try:
        array = pa.array(values)  # arrays and other types pyarrow can infer
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        array = None
    if array is None or pa.types.is_null(array.type):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return array
