"""Step 8, finalize: how the run ended, from the audit log."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from skein.audit import Action
from skein.pipeline.context import RunContext
from skein.pipeline.live import refresh_summary
from skein.pipeline.rollback_scope import pending_rollbacks
from skein.pipeline.waves import approved_scope, unfinished_waves

RunStatus = Literal["finished", "failed", "rolled_back", "rejected", "stopped", "paused", "dry_run"]


def run_status(ctx: RunContext) -> RunStatus:
    """The run's end state as its audit log tells it."""
    actions = Counter(e.action for e in ctx.events())
    if ctx.run_id in pending_rollbacks(ctx.store, ctx.campaign_id):
        return "failed"  # decided to roll back and did not finish: the next run finishes it
    if actions[Action.CAMPAIGN_ROLLED_BACK] or actions[Action.ROLLBACK_INCOMPLETE]:
        return "rolled_back"
    if unfinished_waves(ctx) or not actions[Action.PLANNED]:
        return "failed"  # a step crashed: a wave without a verdict, or no plan
    if actions[Action.APPLY_PAUSED] or any(e.detail.get("message", "").startswith("campaign paused")
                                           for e in ctx.events(Action.WAVE_SKIPPED)):
        return "paused"  # a person paused it: what was left is applied by a later run
    # The latest answer counts: a run rejected, then approved on a rerun, is not stopped.
    if approved_scope(ctx) == "none":
        return "stopped" if actions[Action.APPLIED] else "rejected"
    if actions[Action.WAVE_FAILED]:
        return "failed"
    return "finished"


def finalize(ctx: RunContext, status: RunStatus | None = None) -> dict:
    """Record how the run ended and return its counts."""
    status = status or run_status(ctx)
    states = Counter(e.action for e in ctx.store.consumer_states(ctx.campaign_id, ctx.run_id).values())
    plan = ctx.files.plan() if ctx.files.has_plan() else None
    earlier = {cid for cid, e in ctx.store.consumer_states(ctx.campaign_id).items()
               if e.action == Action.APPLIED and e.run_id != ctx.run_id}
    outcome = {"status": status, "applied": states[Action.APPLIED],
               "migrated_before": len(earlier),  # by earlier runs of the campaign
               "rolled_back": states[Action.ROLLED_BACK],
               "failed": states[Action.APPLY_FAILED] + states[Action.MONITOR_FAILED],
               "refuted": plan.counts.get("failed", 0) if plan else 0,  # by their dry run
               "escalated": plan.counts.get("escalated", 0) if plan else 0,
               **rollback_outcome(ctx, states)}
    ctx.record(Action.FINISHED, **outcome)
    refresh_summary(ctx, f"the run finished ({status})")
    ctx.release_run()
    return outcome


def rollback_outcome(ctx: RunContext, states: Counter) -> dict:
    """What the run's report must say about rollbacks, so that it never claims more than
    was undone: consumers it could not restore, whether its own rollback is still owed, and
    the interrupted rollbacks of earlier runs it finished (run, restored, not restored)."""
    resumed = [{"run": e.detail.get("run"), "restored": len(e.detail.get("restored") or []),
                "not_restored": e.detail.get("not_restored") or {}}
               for e in ctx.events(Action.ROLLBACK_RESUMED)]
    return {"not_restored": states[Action.ROLLBACK_FAILED],
            "rollback_pending": ctx.run_id in pending_rollbacks(ctx.store, ctx.campaign_id),
            "finished_rollbacks": resumed}


def migrated_outputs(ctx: RunContext) -> list[tuple[str, str, str | None]]:
    """(consumer id, dataset it produces, content hash) of every consumer this run applied
    that is itself a dataset (a view, a dbt model): what downstream schedules may react to."""
    by_id = ctx.catalog().by_id()
    out = []
    for cid, event in ctx.store.consumer_states(ctx.campaign_id, ctx.run_id).items():
        output = by_id[cid].output if cid in by_id else None
        if event.action == Action.APPLIED and output:
            out.append((cid, output, event.after_hash))
    return out
