"""Step 1, discover: the catalog and the impacted consumers, frozen for every later step."""

from __future__ import annotations

import fnmatch

from skein.audit import Action
from skein.discovery import DiscoveryReport, discover_catalog
from skein.pipeline.context import RunContext


def discover(ctx: RunContext, consumer_filter: str | None = None, workers: int | None = None
             ) -> list[str]:
    """Discovery and the catalog; returns the ids the agents and the simulation work on
    (impacted consumers, optionally only those matching the filter, plus the upstream they
    need). The run claims its campaign first: a second run at the same time is refused; then
    it finishes any rollback an earlier run decided and never finished, so that discovery
    sees the consumers as they were before that run."""
    ctx.claim_run()
    if ctx.store is not None:
        from skein.pipeline.rollback import finish_interrupted_rollbacks

        finish_interrupted_rollbacks(ctx)
    catalog, report = discover_catalog(ctx.campaign, workers)
    if consumer_filter:
        report = filter_report(report, consumer_filter)
    ctx.files.write_discovery(catalog, report)
    ctx.forget()
    if ctx.store is not None:
        from skein.pipeline.apply import settle_interrupted_writes

        settle_interrupted_writes(ctx)
    retrying = []
    if ctx.store is not None:  # failed consumers a person marked for this run: said so
        from skein.controls import pending_retries

        marked = pending_retries(ctx.store, ctx.campaign_id, run_id=ctx.run_id)
        retrying = sorted(c.id for c in report.consumers if c.id in marked)
    ctx.record(Action.DISCOVERED, counts=dict(report.counts), consumers=len(report.consumers),
               filter=consumer_filter, retrying=retrying)
    return [c.id for c in report.consumers]


def filter_report(report: DiscoveryReport, pattern: str) -> DiscoveryReport:
    """Consumers matching ``pattern`` (fnmatch on the id) and the upstream they read."""
    by_id = {c.id: c for c in report.consumers}
    keep = {c.id for c in report.consumers if fnmatch.fnmatch(c.id, pattern)}
    frontier = list(keep)
    while frontier:
        for up in by_id[frontier.pop()].upstream:
            if up in by_id and up not in keep:
                keep.add(up)
                frontier.append(up)
    consumers = [c for c in report.consumers if c.id in keep]
    counts = {s: sum(1 for c in consumers if c.status == s) for s in report.counts}
    return report.model_copy(update={"consumers": consumers, "counts": counts})


def work_batches(ctx: RunContext) -> list[list[str]]:
    """Units of work for the agents and the simulation (see ``skein.batches``)."""
    from skein.batches import batch_size, plan_batches

    items = ctx.report().consumers
    return plan_batches(items, batch_size(len(items), ctx.campaign.fleet.batch_size))
