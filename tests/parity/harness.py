"""Run one migration over a benchmark's queries: original on the original data vs the
rewritten query on the migrated data, both executed in DuckDB.

The migrated database has the target built from the source by the migration's forward SQL
and the source moved out of the way, so a rewrite that left a reference to it fails loudly. Which
queries read the source is decided by the engine, not by the rewriter: a query reads it when
it no longer binds once the source is gone.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import duckdb

from parity.compare import Result, difference, run
from parity.migrations import Migration
from parity.tpc import open_database, table_schemas
from skein.rewrite.request import Escalation, Patch, RewriteRequest

Rewrite = Callable[[RewriteRequest], "Patch | Escalation"]
QUERY_TIMEOUT_S = 30.0
HIDDEN = "parity_hidden"  # where the source waits while the rewritten queries run


@dataclass
class Baseline:
    """The original database (kept open), its schemas and every query's original result."""

    benchmark: str
    con: duckdb.DuckDBPyConnection
    schemas: dict[str, dict[str, str]]
    queries: dict[str, str]
    results: dict[str, Result]
    readers: dict[str, list[str]] = field(default_factory=dict)  # source -> queries reading it

    def close(self) -> None:
        self.con.close()


@dataclass
class MigrationSummary:
    benchmark: str
    migration: str
    what: str
    source: str
    target: str
    queries: int = 0
    reading: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    matching: list[str] = field(default_factory=list)
    escalations: dict[str, str] = field(default_factory=dict)
    mismatches: dict[str, str] = field(default_factory=dict)  # rewritten but not the same result
    crashes: dict[str, str] = field(default_factory=dict)  # the agent raised
    expected_escalations: list[str] = field(default_factory=list)
    nonempty_results: int = 0  # matching queries whose result has rows: how strong the check is
    rewrite_s: float = 0.0
    seconds: float = 0.0

    @property
    def unexpected_escalations(self) -> dict[str, str]:
        return {q: r for q, r in self.escalations.items() if q not in self.expected_escalations}

    @property
    def missing_escalations(self) -> list[str]:
        return [q for q in self.expected_escalations if q not in self.escalations]

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.crashes or self.unexpected_escalations
                    or self.missing_escalations)

    def line(self) -> str:
        share = 100.0 * len(self.matching) / len(self.rewritten) if self.rewritten else 100.0
        return (f"{self.benchmark} {self.migration}: {self.queries} queries, {len(self.reading)} read "
                f"{self.source}, {len(self.rewritten)} rewritten, {len(self.escalations)} escalated "
                f"({len(self.expected_escalations)} expected), {len(self.matching)}/{len(self.rewritten)} "
                f"match ({share:.1f}%), {self.nonempty_results} with rows; {len(self.mismatches)} "
                f"mismatches, {len(self.crashes)} crashes [{self.what}]")

    def problems(self) -> str:
        lines = [self.line()]
        lines += [f"  MISMATCH {q}: {r}" for q, r in sorted(self.mismatches.items())]
        lines += [f"  CRASH {q}: {r}" for q, r in sorted(self.crashes.items())]
        lines += [f"  ESCALATED {q}: {r}" for q, r in sorted(self.unexpected_escalations.items())]
        lines += [f"  NOT ESCALATED {q} (reads a dropped column)" for q in self.missing_escalations]
        return "\n".join(lines)

    def as_json(self) -> dict:
        data = asdict(self)
        data["unexpected_escalations"] = self.unexpected_escalations
        data["missing_escalations"] = self.missing_escalations
        data["ok"] = self.ok
        return data


def make_baseline(benchmark: str, data: Path, queries: dict[str, str]) -> Baseline:
    con = open_database(data)
    results = {name: _run_with_timeout(con, sql) for name, sql in queries.items()}
    return Baseline(benchmark, con, table_schemas(con), queries, results)


@contextmanager
def migrated(baseline: Baseline, migration: Migration) -> Iterator[dict[str, dict[str, str]]]:
    """The baseline database with the target built (checked lossless) and the source moved
    out of the way, restored afterwards. Yields the target's schema."""
    con = baseline.con
    source_columns = list(baseline.schemas[migration.source])
    target_schema = migration.target.rsplit(".", 1)[0]
    created_schema = target_schema not in {name.split(".")[0] for name in baseline.schemas}
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {target_schema}")
    con.execute(f"CREATE TABLE {migration.target} AS {migration.forward_select(source_columns)}")
    con.execute(f"CREATE SCHEMA {HIDDEN}")
    try:
        check_lossless(con, migration, source_columns)
        target = {migration.target: table_schemas(con)[migration.target]}
        con.execute(f"CREATE TABLE {HIDDEN}.{migration.table_name} AS FROM {migration.source}")
        con.execute(f"DROP TABLE {migration.source}")
        yield target
    finally:
        if con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
                       [HIDDEN, migration.table_name]).fetchall()[0][0]:
            con.execute(f"CREATE TABLE IF NOT EXISTS {migration.source} AS "
                        f"FROM {HIDDEN}.{migration.table_name}")
        con.execute(f"DROP SCHEMA {HIDDEN} CASCADE")
        con.execute(f"DROP TABLE {migration.target}")
        if created_schema:
            con.execute(f"DROP SCHEMA {target_schema}")


def check_lossless(con, migration: Migration, source_columns: list[str]) -> None:
    """Reading the kept columns back through the mapping gives the source exactly."""
    kept = [c for c in source_columns if migration.columns.get(c, c) is not None]
    original = f"SELECT {', '.join(kept)} FROM {migration.source}"
    back = migration.backward_select(source_columns)
    want, got = run(con, f"{original} LIMIT 0"), run(con, f"{back} LIMIT 0")
    if want.types != got.types:
        raise AssertionError(f"{migration.name}: mapping changes types: {want.types} vs {got.types}")
    for a, b in ((original, back), (back, original)):
        extra = con.execute(f"SELECT count(*) FROM ({a} EXCEPT ALL {b})").fetchall()[0][0]
        if extra:
            raise AssertionError(f"{migration.name}: the migration is lossy ({extra} rows differ): "
                                 f"fix the migration, not the rewrite")


def reads_source(con, sql: str) -> bool:
    """With the source dropped, a query that reads it no longer binds."""
    try:
        con.execute(f"EXPLAIN {sql}")
    except duckdb.CatalogException:
        return True
    return False


def request_for(baseline: Baseline, migration: Migration, name: str, target: dict) -> RewriteRequest:
    """Schemas of every original table plus the target, as the catalog would give them."""
    return RewriteRequest(
        consumer_id=f"{baseline.benchmark}/{name}.sql", text=baseline.queries[name], dialect="duckdb",
        source=migration.source, target=migration.target, columns=dict(migration.columns),
        schemas={**baseline.schemas, **target}, default_schema="main")


def run_migration(baseline: Baseline, migration: Migration, rewrite: Rewrite) -> MigrationSummary:
    started = time.perf_counter()
    summary = MigrationSummary(baseline.benchmark, migration.name, migration.what, migration.source,
                               migration.target, queries=len(baseline.queries),
                               expected_escalations=sorted(migration.expected_escalations))
    con = baseline.con
    with migrated(baseline, migration) as target:
        if migration.source not in baseline.readers:
            baseline.readers[migration.source] = [name for name, sql in baseline.queries.items()
                                                  if reads_source(con, sql)]
        summary.reading = list(baseline.readers[migration.source])
        for name in summary.reading:
            request = request_for(baseline, migration, name, target)
            t0 = time.perf_counter()
            try:
                result = rewrite(request)
            except Exception as exc:  # noqa: BLE001 - reported, the suite fails on it
                summary.crashes[name] = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                summary.rewrite_s += time.perf_counter() - t0
            if not isinstance(result, Patch):  # escalated, or (a reader!) said unchanged
                summary.escalations[name] = (result.reason if isinstance(result, Escalation)
                                             else f"unchanged: {result.reason}")
                continue
            summary.rewritten.append(name)
            problem = _compare(con, baseline.results[name], result.text)
            if problem:
                summary.mismatches[name] = problem
            else:
                summary.matching.append(name)
                summary.nonempty_results += bool(baseline.results[name].rows)
    summary.rewrite_s = round(summary.rewrite_s, 3)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _compare(con, original: Result, rewritten_sql: str) -> str | None:
    try:
        rewritten = _run_with_timeout(con, rewritten_sql)
    except duckdb.Error as exc:
        return f"rewritten query fails: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return difference(original, rewritten)


def _run_with_timeout(con, sql: str) -> Result:
    timer = threading.Timer(QUERY_TIMEOUT_S, con.interrupt)
    timer.start()
    try:
        return run(con, sql)
    finally:
        timer.cancel()
