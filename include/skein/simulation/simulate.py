"""Dry-run every patch on data: the old code in the old world, the new code in the new one.

Two sandboxes: the *old world* holds the warehouse's inputs with the source; the *new
world* holds the same inputs with the target instead (read from the warehouse, or built
from the campaign's ``forward`` query), and no source at all. Impacted consumers run in
migration order in both; a consumer that produces a dataset (a view, a dbt model) leaves
it behind in its world, so views on views read their upstream's old or patched version.
Each consumer's two outputs are then compared value by value (``parity``).
"""

from __future__ import annotations

import time

import duckdb
from pydantic import BaseModel, ConfigDict

from skein.agents.base import Escalation, Patch
from skein.catalog import Catalog, Consumer
from skein.discovery import DiscoveryReport
from skein.simulation.parity import compare_tables, describe
from skein.simulation.sandbox import Sandbox, SandboxError
from skein.spec import Campaign
from skein.warehouse import DuckDBWarehouse, open_warehouse


class Simulation(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    status: str  # pass | fail | error | skipped
    reason: str
    old_rows: int | None = None
    new_rows: int | None = None
    only_old: int = 0
    only_new: int = 0
    differing_columns: list[str] = []
    samples: list[dict] = []
    seconds: float = 0.0


def simulate(campaign: Campaign, catalog: Catalog, report: DiscoveryReport,
             results: dict[str, Patch | Escalation]) -> dict[str, Simulation]:
    settings = campaign.simulation
    warehouse = open_warehouse(campaign.warehouse, campaign.base_dir)
    if not isinstance(warehouse, DuckDBWarehouse):
        raise SandboxError("simulation reads DuckDB warehouses so far")
    by_id = catalog.by_id()
    impacted = [by_id[c.id] for c in report.consumers]
    source, target = report.source, report.target
    produced = {c.output for c in impacted if c.output}
    inputs = sorted({d for c in impacted for d in c.lineage.reads if d not in produced} | {source})
    out: dict[str, Simulation] = {}
    limits = {"timeout_s": settings.timeout_s, "memory_limit": settings.memory_limit}
    with Sandbox(**limits) as old_world, Sandbox(**limits) as new_world:
        _load_worlds(campaign, warehouse, inputs, source, target, old_world, new_world)
        broken: set[str] = set()  # datasets the new world cannot have (their producer escalated)
        statuses = {c.id: c.status for c in report.consumers}
        for number, consumer in enumerate(impacted):
            result = results.get(consumer.id)
            if statuses[consumer.id] == "escalate" and result is None:
                result = Escalation(consumer_id=consumer.id, agent="discovery", reason="escalated")
            out[consumer.id] = _simulate_one(consumer, number, result, old_world,
                                             new_world, broken, settings.rel_tol)
    return out


def sample_query(name: str, rows: int, limit: int, keys: list[str] | None, buckets: int) -> str:
    """All rows up to ``limit``; above it, the rows whose key hashes into bucket 0 of
    ``buckets``. One bucket count per run, so a key kept in one dataset is kept in all of
    them and joins keep their partners; without a key, a hash of the whole row.

    >>> sample_query("analytics.plays", 10, 100, ["user_id"], 10)
    'SELECT * FROM analytics.plays'
    >>> sample_query("analytics.plays", 1000, 100, ["user_id"], 10)
    'SELECT * FROM analytics.plays AS t WHERE hash(t."user_id") % 10 = 0'
    """
    table = _quoted(name)
    if rows <= limit:
        return f"SELECT * FROM {table}"
    from sqlglot import exp

    key = ", ".join(f"t.{exp.to_identifier(k, quoted=True).sql('duckdb')}" for k in keys) if keys else "t"
    return f"SELECT * FROM {table} AS t WHERE hash({key}) % {buckets} = 0"


def _load_worlds(campaign, warehouse, inputs, source, target, old_world, new_world) -> None:
    schemas = warehouse.schemas()
    settings = campaign.simulation
    con = duckdb.connect(str(warehouse.file), read_only=True)

    sizes = {name: con.sql(f"SELECT count(*) FROM {_quoted(name)}").fetchall()[0][0]
             for name in [*inputs, target] if name in schemas}
    buckets = max(1, -(-max(sizes.values(), default=0) // settings.sample_rows))

    def read(name: str):
        rows = sizes[name]
        keys = settings.sample_keys.get(name)
        if keys is None and name == target:  # the source's keys, renamed as the campaign says
            from skein.rewrite.render import is_plain_column

            keys = [is_plain_column(campaign.columns.get(k, k), campaign.sql_dialect) or k
                    for k in settings.sample_keys.get(source, [])] or None
        return con.sql(sample_query(name, rows, settings.sample_rows, keys, buckets)).to_arrow_table()

    try:
        for name in inputs:
            if name not in schemas:
                continue  # a table the catalog does not know: consumers reading it will fail
            data = read(name)
            old_world.load(name, data)
            if name != source:
                new_world.load(name, data)
        if target in schemas:
            new_world.load(target, read(target))
        elif campaign.forward:
            # The campaign's own SQL, trusted like the campaign file: built before locking.
            built = old_world.connection.sql(campaign.forward).to_arrow_table()
            new_world.load(target, built)
    finally:
        con.close()
    old_world.lock()
    new_world.lock()


def _quoted(name: str) -> str:
    from sqlglot import exp

    return exp.to_table(name).sql(dialect="duckdb")


def _new_sql(consumer: Consumer, result) -> str | None:
    if isinstance(result, Patch):
        if consumer.dbt_project_root is not None and consumer.file is not None:
            from skein.rewrite.dbt_mask import dbt_project

            return dbt_project(str(consumer.dbt_project_root)).render(consumer.file, result.text).sql
        return result.text
    if isinstance(result, Escalation) or consumer.error or consumer.lineage.error:
        return None
    return consumer.sql  # a transitive consumer: its code stays, its upstream changed


def _simulate_one(consumer: Consumer, number: int, result, old_world: Sandbox, new_world: Sandbox,
                  broken: set[str], rel_tol: float) -> Simulation:
    started = time.perf_counter()
    new_sql = _new_sql(consumer, result)
    blocked = sorted(set(consumer.lineage.reads) & broken)
    if new_sql is None or blocked:
        if consumer.output:
            broken.add(consumer.output)
        reason = (f"upstream {', '.join(blocked)} is not migrated" if blocked
                  else "not simulated: escalated to a human")
        return Simulation(id=consumer.id, status="skipped", reason=reason)
    old_out, new_out = f"__old_{number}", f"__new_{number}"
    try:
        old_world.run(consumer.sql, old_out, dialect=consumer.dialect)
        new_world.run(new_sql, new_out, dialect=consumer.dialect)
    except SandboxError as exc:
        if consumer.output:
            broken.add(consumer.output)
        return Simulation(id=consumer.id, status="error", reason=str(exc),
                          seconds=round(time.perf_counter() - started, 3))
    if consumer.output:
        old_world.keep(old_out, consumer.output)
        new_world.keep(new_out, consumer.output)
    seconds = round(time.perf_counter() - started, 3)
    old_types, new_types = describe(old_world.connection, old_out), describe(new_world.connection, new_out)
    # Names compare case-insensitively: the engines Skein targets fold unquoted identifiers.
    if [c.lower() for c, _ in old_types] != [c.lower() for c, _ in new_types]:
        return Simulation(id=consumer.id, status="fail", seconds=seconds,
                          reason=f"columns differ: {[c for c, _ in old_types]} -> {[c for c, _ in new_types]}")
    if [t for _, t in old_types] != [t for _, t in new_types]:
        changed = [f"{c}: {a} -> {b}" for (c, a), (_, b) in zip(old_types, new_types) if a != b]
        return Simulation(id=consumer.id, status="fail", seconds=seconds,
                          reason="types differ: " + "; ".join(changed))
    # Types are equal as the engine reports them; the old rows cross over as Arrow, which
    # widens some (HUGEINT -> DECIMAL), so cast them back before comparing values.
    compared = f"__cmp_{number}"
    new_world.load_result(compared, old_world.table(old_out))
    new_world.cast_columns(compared, new_types)
    parity = compare_tables(new_world.connection, compared, new_out, rel_tol=rel_tol)
    return Simulation(id=consumer.id, status=parity.status, reason=parity.reason,
                      old_rows=parity.old_rows, new_rows=parity.new_rows, only_old=parity.only_old,
                      only_new=parity.only_new, differing_columns=parity.differing_columns,
                      samples=[{k: _plain(v) for k, v in row.items()} for row in parity.samples],
                      seconds=round(time.perf_counter() - started, 3))


def _plain(value):
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)

