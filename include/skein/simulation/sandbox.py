"""A DuckDB session where consumer SQL runs with no file or network access.

Inputs are loaded first, then the configuration is locked: external access off (no
``read_csv('/etc/passwd')``, no ``COPY ... TO``), memory and threads capped, and every
query interrupted at its time limit. Only queries run (a consumer's ``CREATE VIEW`` is
run as its ``SELECT``), so consumer SQL cannot change the inputs.

>>> import pyarrow as pa
>>> with Sandbox(timeout_s=5) as box:
...     box.load("analytics.plays", pa.table({"user_id": [1, 2, 2]}))
...     box.lock()
...     box.run("SELECT user_id, COUNT(*) AS n FROM analytics.plays GROUP BY 1 ORDER BY 1", "out")
...     box.connection.sql("SELECT * FROM out").fetchall()
[(1, 1), (2, 2)]
"""

from __future__ import annotations

import threading

import duckdb
import sqlglot
from sqlglot import exp

from skein.errors import SkeinError
from skein.lineage import split_statement
from skein.sqlbudget import TooComplex, parse


class SandboxError(SkeinError):
    """Consumer SQL failed, was refused, or ran out of time or memory."""


class Sandbox:
    def __init__(self, *, memory_limit: str = "1GB", threads: int = 1, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.connection = duckdb.connect(":memory:", config={"threads": threads,
                                                             "memory_limit": memory_limit})
        self._locked = False

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.connection.close()

    def load(self, name: str, data) -> None:
        """Create ``schema.table`` from an Arrow table or pandas frame (before ``lock``)."""
        if self._locked:
            raise SandboxError("inputs are loaded before the sandbox is locked")
        self._create(name, data)

    def load_result(self, name: str, data) -> None:
        """Bring another sandbox's output in, to compare both here (data only, no SQL)."""
        self._create(name, data)

    def table(self, name: str):
        """A result as an Arrow table."""
        return self.connection.sql(f"SELECT * FROM {exp.to_table(name).sql(dialect='duckdb')}").to_arrow_table()

    def cast_columns(self, name: str, types: list[tuple[str, str]]) -> None:
        """Rename and retype a loaded table's columns to ``types`` (name, DuckDB type)."""
        from sqlglot import exp as _exp

        current = [row[0] for row in self.connection.sql(
            f"DESCRIBE SELECT * FROM {_exp.to_table(name).sql(dialect='duckdb')}").fetchall()]
        items = ", ".join(
            f"CAST({_exp.to_identifier(old, quoted=True).sql('duckdb')} AS {dtype}) AS "
            f"{_exp.to_identifier(new, quoted=True).sql('duckdb')}"
            for old, (new, dtype) in zip(current, types))
        table = _exp.to_table(name).sql(dialect="duckdb")
        self.connection.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT {items} FROM {table}")

    def keep(self, result: str, dataset: str) -> None:
        """Make a consumer's output the dataset it produces, for consumers downstream."""
        self._create(dataset, self.table(result), replace=True)

    def _create(self, name: str, data, replace: bool = False) -> None:
        schema, _, table = name.rpartition(".")
        target = exp.to_table(name).sql(dialect="duckdb")  # quoted where needed, never pasted raw
        if schema:
            self.connection.execute(f"CREATE SCHEMA IF NOT EXISTS {exp.to_identifier(schema).sql('duckdb')}")
        self.connection.register("_skein_input", data)
        create = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE"
        try:
            self.connection.execute(f"{create} {target} AS SELECT * FROM _skein_input")
        finally:
            self.connection.unregister("_skein_input")

    def lock(self) -> None:
        for setting in ("SET enable_external_access = false", "SET autoinstall_known_extensions = false",
                        "SET autoload_known_extensions = false", "SET lock_configuration = true"):
            self.connection.execute(setting)
        self._locked = True

    def run(self, sql: str, into: str, dialect: str = "duckdb") -> None:
        """Run one consumer's query and keep its rows in table ``into``."""
        if not self._locked:
            raise SandboxError("lock() the sandbox before running consumer SQL")
        try:
            statements = [s for s in parse(sql, dialect)[1] if s is not None]
        except TooComplex as exc:
            raise SandboxError(str(exc)) from None
        except sqlglot.errors.SqlglotError as exc:
            raise SandboxError(f"does not parse: {str(exc).splitlines()[0]}") from None
        if len(statements) != 1:
            raise SandboxError(f"expected one statement, found {len(statements)}")
        query, _ = split_statement(statements[0])
        for table in query.find_all(exp.Table) if query is not None else ():
            table.set("catalog", None)  # `project.dataset.table`: Skein ignores the catalog part
        if query is None:
            raise SandboxError(f"only queries run in the sandbox, not {statements[0].key.upper()}")
        target = exp.to_identifier(into).sql(dialect="duckdb")
        try:
            # Unsupported constructs raise instead of producing SQL that runs but means
            # something else: such a consumer is reported, never silently passed.
            runnable = query.sql(dialect="duckdb", unsupported_level=sqlglot.ErrorLevel.RAISE)
        except sqlglot.errors.UnsupportedError as exc:
            raise SandboxError(f"cannot run {dialect} SQL on DuckDB faithfully: {exc}") from None
        self._execute(f"CREATE OR REPLACE TEMP TABLE {target} AS {runnable}")

    def _execute(self, sql: str) -> None:
        timer = threading.Timer(self.timeout_s, self.connection.interrupt)
        timer.start()
        try:
            self.connection.execute(sql)
        except duckdb.InterruptException:
            raise SandboxError(f"stopped at its time limit ({self.timeout_s:g} s)") from None
        except duckdb.Error as exc:
            raise SandboxError(f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        finally:
            timer.cancel()
