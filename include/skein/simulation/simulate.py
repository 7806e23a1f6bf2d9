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
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from skein.rewrite.request import Escalation, Patch
from skein.catalog import Catalog, Consumer
from skein.discovery import DiscoveryReport
from skein.simulation.parity import compare_tables, describe
from skein.simulation.sandbox import Sandbox, SandboxError
from skein.simulation.values import json_value
from skein.simulation.worlds import load_worlds, open_campaign_warehouse, unreadable_input
from skein.spec import Campaign

SimulationStatus = Literal["pass", "fail", "error", "skipped"]


class SimulationResult(BaseModel):
    """One consumer's dry run: the parity verdict, differing rows, expectations."""

    model_config = ConfigDict(frozen=True)
    id: str
    status: SimulationStatus
    reason: str
    old_rows: int | None = None
    new_rows: int | None = None
    only_old: int = 0
    only_new: int = 0
    differing_columns: list[str] = []
    samples: list[dict] = []
    seconds: float = 0.0
    # Expectations on the new output (profile of the old one, dbt contract, campaign), run
    # when parity passed: {type, kwargs, origin, success, observed} each.
    expectations: list[dict] = []
    expectations_passed: bool | None = None
    # dbt as the verifier (skein.simulation.dbt_verify): the build of the patched dbt models
    # and their descendants, with the project's tests; a refuted build failed this result.
    dbt_build: dict | None = None


def simulate(campaign: Campaign, catalog: Catalog, report: DiscoveryReport,
             results: dict[str, Patch | Escalation],
             on_consumer: Callable[[int, int, str], None] | None = None) -> dict[str, SimulationResult]:
    """Dry-run every consumer of ``report`` in both worlds; ``on_consumer(done, total, id)``
    is told before each one (a dry run takes minutes on a large fleet: say where it is)."""
    settings = campaign.simulation
    warehouse = open_campaign_warehouse(campaign)  # DuckDB or PostgreSQL, read as the sandbox
    by_id = catalog.by_id()
    impacted = [by_id[c.id] for c in report.consumers]
    source, target = report.source, report.target
    produced = {c.output for c in impacted if c.output}
    inputs = sorted({d for c in impacted for d in c.lineage.reads if d not in produced} | {source})
    out: dict[str, SimulationResult] = {}
    limits = {"timeout_s": settings.timeout_s, "memory_limit": settings.memory_limit}
    with Sandbox(**limits) as old_world, Sandbox(**limits) as new_world:
        unreadable = load_worlds(campaign, warehouse, inputs, source, target, old_world, new_world)
        broken: set[str] = set()  # datasets the new world cannot have (their producer escalated)
        statuses = {c.id: c.status for c in report.consumers}
        for number, consumer in enumerate(impacted):
            if on_consumer is not None:
                on_consumer(number, len(impacted), consumer.id)
            result = results.get(consumer.id)
            if statuses[consumer.id] == "escalate" and result is None:
                result = Escalation(consumer_id=consumer.id, agent="discovery", reason="escalated")
            refused = unreadable_input(consumer.lineage.reads, unreadable)
            if refused is not None and not isinstance(result, Escalation):  # else: skipped
                broken.update([consumer.output] if consumer.output else [])
                out[consumer.id] = SimulationResult(id=consumer.id, status="error", reason=refused)
                continue
            out[consumer.id] = _simulate_one(consumer, number, result, old_world,
                                             new_world, broken, settings.rel_tol, campaign)
            # A consumer writing the source (INSERT INTO it) cannot break it for the others:
            # the new world has the target instead, which their patches read (issue 18).
            broken -= {source, target}
        if settings.dbt_build:
            from skein.simulation.dbt_verify import with_dbt_builds

            new_inputs = [d for d in inputs if d != source] + [target]
            out = with_dbt_builds(impacted, results, out, (old_world, new_world),
                                  (inputs, new_inputs))
    return out


def new_sql(consumer: Consumer, result) -> str | None:
    """The code a consumer runs after the campaign (rendered, for dbt), or None when it has
    none (escalated, unanalysable)."""
    if isinstance(result, Patch):
        if consumer.dbt_project_root is not None and consumer.file is not None:
            from skein.rewrite.dbt_mask import dbt_project

            return dbt_project(str(consumer.dbt_project_root)).render(consumer.file, result.text).sql
        return result.text
    if isinstance(result, Escalation) or consumer.error or consumer.lineage.error:
        return None
    return consumer.sql  # a transitive consumer: its code stays, its upstream changed


def _simulate_one(consumer: Consumer, number: int, result, old_world: Sandbox, new_world: Sandbox,
                  broken: set[str], rel_tol: float, campaign: Campaign | None = None) -> SimulationResult:
    started = time.perf_counter()
    migrated = new_sql(consumer, result)
    blocked = sorted(set(consumer.lineage.reads) & broken)
    if migrated is None or blocked:
        if consumer.output:
            broken.add(consumer.output)
        reason = (f"upstream {', '.join(blocked)} is not migrated" if blocked
                  else "not simulated: escalated to a human")
        return SimulationResult(id=consumer.id, status="skipped", reason=reason)
    old_out, new_out = f"__old_{number}", f"__new_{number}"
    try:
        old_world.run(consumer.sql, old_out, dialect=consumer.dialect)
        new_world.run(migrated, new_out, dialect=consumer.dialect)
    except SandboxError as exc:
        if consumer.output:
            broken.add(consumer.output)
        return SimulationResult(id=consumer.id, status="error", reason=str(exc),
                          seconds=round(time.perf_counter() - started, 3))
    if consumer.output:
        old_world.keep(old_out, consumer.output)
        new_world.keep(new_out, consumer.output)
    seconds = round(time.perf_counter() - started, 3)
    old_types, new_types = describe(old_world.connection, old_out), describe(new_world.connection, new_out)
    # Names compare case-insensitively: the engines Skein targets fold unquoted identifiers.
    if [c.lower() for c, _ in old_types] != [c.lower() for c, _ in new_types]:
        return SimulationResult(id=consumer.id, status="fail", seconds=seconds,
                          reason=f"columns differ: {[c for c, _ in old_types]} -> {[c for c, _ in new_types]}")
    if [t for _, t in old_types] != [t for _, t in new_types]:
        changed = [f"{c}: {a} -> {b}" for (c, a), (_, b) in zip(old_types, new_types) if a != b]
        return SimulationResult(id=consumer.id, status="fail", seconds=seconds,
                          reason="types differ: " + "; ".join(changed))
    # Types are equal as the engine reports them; the old rows cross over as Arrow, which
    # widens some (HUGEINT -> DECIMAL), so cast them back before comparing values.
    compared = f"__cmp_{number}"
    old_table = old_world.table(old_out)
    new_world.load_result(compared, old_table)
    new_world.cast_columns(compared, new_types)
    parity = compare_tables(new_world.connection, compared, new_out, rel_tol=rel_tol)
    simulation = SimulationResult(id=consumer.id, status=parity.status, reason=parity.reason,
                            old_rows=parity.old_rows, new_rows=parity.new_rows, only_old=parity.only_old,
                            only_new=parity.only_new, differing_columns=parity.differing_columns,
                            samples=[{k: json_value(v) for k, v in row.items()} for row in parity.samples],
                            seconds=round(time.perf_counter() - started, 3))
    if parity.status != "pass" or campaign is None:
        return simulation
    old_table = old_table.rename_columns([c for c, _ in new_types])  # names as parity matched them
    return _with_expectations(simulation, consumer, campaign, old_table, new_world.table(new_out),
                              new_types, started)


def _with_expectations(simulation: SimulationResult, consumer: Consumer, campaign: Campaign, old, new,
                       new_types: list[tuple[str, str]], started: float) -> SimulationResult:
    """Validate the new output against the old one's profile, the consumer's dbt contract and
    the campaign's expectations; any failure fails the simulation, naming what failed."""
    from skein.simulation import expectations as ex

    specs = ex.profile_expectations(old, rel_tol=campaign.simulation.rel_tol)
    if consumer.kind == "dbt_model" and consumer.dbt_project_root and consumer.file:
        specs += ex.dbt_expectations(consumer.dbt_project_root, consumer.file.stem)
    specs += ex.campaign_expectations(campaign, consumer.id, new.column_names, consumer.output)
    try:
        checked = ex.validate(specs, new, engine_types=new_types, dialect=consumer.dialect)
    except Exception as exc:  # GX itself failed: say so rather than lose the whole run
        return simulation.model_copy(update={
            "status": "error", "reason": f"expectations could not run: {type(exc).__name__}: {exc}",
            "seconds": round(time.perf_counter() - started, 3)})
    update = {"expectations": checked.results, "expectations_passed": checked.passed,
              "seconds": round(time.perf_counter() - started, 3)}
    if not checked.passed:
        failed = [f"{r['type']}({r['kwargs'].get('column', '')}) [{r['origin']}]" for r in checked.failed]
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        update |= {"status": "fail", "reason": f"expectations failed: {', '.join(failed[:5])}{more}"}
    return simulation.model_copy(update=update)
