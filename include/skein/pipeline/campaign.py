"""The whole campaign without a scheduler: ``skein plan`` (the first steps) and ``skein run``
(every step, in the order the campaign DAG runs them)."""

from __future__ import annotations

import time

from skein.pipeline.apply import apply_wave
from skein.pipeline.context import RunContext
from skein.pipeline.discover import discover
from skein.pipeline.finalize import finalize
from skein.pipeline.monitor import monitor_wave
from skein.pipeline.rewrite import rewrite_consumers
from skein.pipeline.rollback import rollback
from skein.pipeline.simulate import simulate_consumers
from skein.pipeline.summarize import Summary, summarize
from skein.approvals import OPTION_OF_SCOPE
from skein.pipeline.waves import record_decision, start_wave


def plan_campaign(ctx: RunContext, *, consumer_filter: str | None = None,
                  workers: int | None = None, simulate: bool = True, llm_model=None) -> Summary:
    """Discover, rewrite, simulate (with the refuted-patch retry), summarize: what ``skein
    plan`` does and what a campaign run does before its approval. One process: one batch."""
    ids = discover(ctx, consumer_filter, workers)
    rewrite_consumers(ctx, ids, llm_model)
    if simulate:
        simulate_consumers(ctx, ids, llm_model)
    return summarize(ctx, simulated=simulate)


def run_campaign(ctx: RunContext, *, approve: str, dry_run: bool = False,
                 waves: list[str] | None = None, error_threshold: float | None = None,
                 consumer_filter: str | None = None, soak: bool = True, workers: int | None = None,
                 llm_model=None) -> dict:
    """Every step in order; ``approve`` answers the approval (all | canary | none). Returns
    ``finalize``'s outcome."""
    ctx.claim_run()  # before anything is recorded: a refused run leaves no trace in the log
    try:
        return _run_steps(ctx, approve=approve, dry_run=dry_run, waves=waves,
                          error_threshold=error_threshold, consumer_filter=consumer_filter,
                          soak=soak, workers=workers, llm_model=llm_model)
    finally:
        ctx.release_run()


def _run_steps(ctx: RunContext, *, approve: str, dry_run: bool, waves: list[str] | None,
               error_threshold: float | None, consumer_filter: str | None, soak: bool,
               workers: int | None, llm_model) -> dict:
    ctx.record_start(dry_run=dry_run, waves=waves, error_threshold=error_threshold,
                     consumer_filter=consumer_filter)
    summary = plan_campaign(ctx, consumer_filter=consumer_filter, workers=workers, llm_model=llm_model)
    if dry_run:
        return finalize(ctx, "dry_run")
    if record_decision(ctx, OPTION_OF_SCOPE[approve]) == "none":
        return finalize(ctx, "rejected")
    for wave in ctx.campaign.rollout.waves:
        if start_wave(ctx, wave.name, selected=waves) is not None:
            continue
        apply_wave(ctx, wave.name, summary.waves.get(wave.name, []))  # one process: one batch
        if soak and wave.soak_minutes:
            time.sleep(wave.soak_minutes * 60)
        health = monitor_wave(ctx, wave.name, error_threshold)
        if not health.passed:
            rollback(ctx, f"wave {wave.name}: error rate {health.error_rate:.0%} > "
                          f"{health.threshold:.0%}")
            break
    return finalize(ctx)
