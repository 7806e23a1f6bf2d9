"""After a wave: run what was applied against the real target dataset and check its suite.

Only the new world runs (the source may already be retired): every consumer applied so far
runs in migration order (so a view's readers see its new output), inside the same sandbox
as the dry run, and the consumers of the wave are validated with the expectations their
simulation recorded (old output's profile, dbt contract, the campaign's own). A consumer
that errors or misses an expectation counts as failed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from skein.catalog import Catalog
from skein.discovery import DiscoveryReport
from skein.simulation.sandbox import Sandbox, SandboxError
from skein.spec import Campaign


class Checked(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    ok: bool
    reason: str


def monitor(campaign: Campaign, catalog: Catalog, report: DiscoveryReport, texts: dict[str, str],
            expectations: dict[str, list[dict]], check: list[str]) -> dict[str, Checked]:
    """``texts``: the code now in place of every consumer applied so far (consumer id -> SQL,
    rendered); ``check``: the ids to validate (the wave's)."""
    from skein.simulation import expectations as ex
    from skein.simulation.parity import describe
    from skein.simulation.worlds import load_worlds, open_campaign_warehouse, unreadable_input

    settings = campaign.simulation
    warehouse = open_campaign_warehouse(campaign)
    by_id = catalog.by_id()
    running = [c for c in report.consumers if c.id in texts]
    produced = {by_id[c.id].output for c in running if by_id[c.id].output}
    inputs = sorted({d for c in running for d in by_id[c.id].lineage.reads if d not in produced})
    wanted = set(check)
    out: dict[str, Checked] = {}
    with Sandbox(timeout_s=settings.timeout_s, memory_limit=settings.memory_limit) as world:
        if report.target not in warehouse.schemas():
            return {cid: Checked(id=cid, ok=False, reason=f"target {report.target} does not exist")
                    for cid in check}
        unreadable = load_worlds(campaign, warehouse, inputs, report.source, report.target, None, world)
        for number, item in enumerate(running):
            consumer = by_id[item.id]
            into = f"__mon_{number}"
            try:
                refused = unreadable_input(consumer.lineage.reads, unreadable)
                if refused is not None:
                    raise SandboxError(refused)
                world.run(texts[item.id], into, dialect=consumer.dialect)
            except SandboxError as exc:
                if item.id in wanted:
                    out[item.id] = Checked(id=item.id, ok=False, reason=f"error: {exc}")
                continue
            if consumer.output:
                world.keep(into, consumer.output)
            if item.id not in wanted:
                continue
            specs = [ex.ExpectationSpec(type=e["type"], kwargs=e["kwargs"], origin=e.get("origin", "profile"))
                     for e in expectations.get(item.id, [])]
            if not specs:
                out[item.id] = Checked(id=item.id, ok=True, reason="ran; no expectations recorded")
                continue
            try:
                result = ex.validate(specs, world.table(into), engine_types=describe(world.connection, into),
                                     dialect=consumer.dialect)
            except Exception as exc:  # noqa: BLE001 - GX failing is a failed check, reported
                out[item.id] = Checked(id=item.id, ok=False, reason=f"expectations could not run: {exc}")
                continue
            if result.passed:
                out[item.id] = Checked(id=item.id, ok=True, reason=f"{len(specs)} expectations met")
            else:
                failed = [f"{r['type']}({r['kwargs'].get('column', '')})" for r in result.failed]
                out[item.id] = Checked(id=item.id, ok=False,
                                       reason="expectations failed: " + ", ".join(failed[:5]))
    for cid in check:  # not in the report any more, or never ran
        out.setdefault(cid, Checked(id=cid, ok=False, reason="not found in the plan"))
    return out
