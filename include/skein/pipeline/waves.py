"""The approval's answer and whether each wave runs: engine policy, decided from the store.

Airflow's wave tasks and ``skein run`` ask the same questions here, so a rerun or a retried
task decides exactly as the first attempt did.
"""

from __future__ import annotations

from skein.approvals import CAMPAIGN_OPTIONS, WAVE_OPTIONS, Scope
from skein.audit import Action
from skein.controls import hold_reason, holds, paused
from skein.pipeline.context import RunContext


def record_decision(ctx: RunContext, chosen: str, user: str | None = None) -> Scope:
    """An approver's answer (an option of ``CAMPAIGN_OPTIONS`` or ``WAVE_OPTIONS``), as the
    audit log keeps it; returns its scope."""
    scope = {**CAMPAIGN_OPTIONS, **WAVE_OPTIONS}[chosen]
    actor = f"user:{user}" if user else ctx.actor
    ctx.store.record(ctx.campaign_id, ctx.run_id, actor,
                     Action.REJECTED if scope == "none" else Action.APPROVED,
                     message=chosen, scope=scope)
    return scope


def approved_scope(ctx: RunContext) -> Scope | None:
    """The latest decision of this run: all | canary | none (rejected) | None (not asked)."""
    decisions = ctx.events(Action.APPROVED, Action.REJECTED)
    return decisions[-1].detail.get("scope") if decisions else None


def failed_waves(ctx: RunContext) -> list:
    """This run's ``wave_failed`` events, oldest first."""
    return ctx.events(Action.WAVE_FAILED)


def why_wave_does_not_run(ctx: RunContext, wave: str, *, dry_run: bool = False,
                          selected: list[str] | None = None) -> str | None:
    """None when ``wave`` may run now, else the reason it does not (``selected``: the waves
    the trigger chose, None for all)."""
    names = [w.name for w in ctx.campaign.rollout.waves]
    scope = approved_scope(ctx)
    if dry_run:
        return "dry run"
    pause = paused(ctx.store, ctx.campaign_id) if ctx.store is not None else None
    if pause is not None:
        return f"campaign paused by {pause.actor}"
    if scope in (None, "none"):
        return "not approved" if scope is None else "rejected or stopped by an approver"
    if scope == "canary" and names.index(wave) > 0:
        return "approved for the canary wave only"
    if failed_waves(ctx):
        return "an earlier wave failed"
    if selected is not None and wave not in selected:
        return "not selected for this run"
    return None


def start_wave(ctx: RunContext, wave: str, *, dry_run: bool = False,
               selected: list[str] | None = None) -> str | None:
    """Decide whether ``wave`` runs and record it; returns None when it runs, else why not."""
    reason = why_wave_does_not_run(ctx, wave, dry_run=dry_run, selected=selected)
    if reason:
        ctx.record(Action.WAVE_SKIPPED, wave=wave, message=reason)
    else:
        ctx.record(Action.WAVE_STARTED, wave=wave)
    return reason


def wave_running(ctx: RunContext, wave: str) -> bool:
    """Whether the latest decision about ``wave`` in this run is to run it."""
    decisions = [e for e in ctx.events(Action.WAVE_STARTED, Action.WAVE_SKIPPED) if e.wave == wave]
    return bool(decisions) and decisions[-1].action == Action.WAVE_STARTED


def wave_batches(ctx: RunContext, wave: str, group: str) -> list[list[str]]:
    """The batches of one apply group of ``wave``, as summarize froze them, without the
    consumers a person skipped or escalated (each audited ``held`` once); none when the wave
    does not run."""
    if not wave_running(ctx, wave):
        return []
    held = holds(ctx.store, ctx.campaign_id)
    noted = {e.consumer for e in ctx.events(Action.HELD) if e.wave == wave}
    batches = []
    for batch in ctx.files.apply_batches()[wave][group]:
        for cid in (c for c in batch if c in held and c not in noted):
            ctx.record(Action.HELD, consumer=cid, wave=wave, message=hold_reason(held[cid]))
        batches.append([cid for cid in batch if cid not in held])
    return [batch for batch in batches if batch]


def unfinished_waves(ctx: RunContext) -> list[str]:
    """Waves this run started that never got a verdict (a task crashed in between): they
    count as failed, so what they applied is rolled back."""
    verdict: dict[str, str] = {}
    for e in ctx.events(Action.WAVE_STARTED, Action.WAVE_PASSED, Action.WAVE_FAILED):
        verdict[e.wave] = e.action
    return [wave for wave, action in verdict.items() if action == Action.WAVE_STARTED]


def rollback_reason(ctx: RunContext) -> str | None:
    """Why this run must roll back (a wave failed its monitoring, or never got a verdict),
    or None."""
    failures = failed_waves(ctx)
    if failures:
        first = failures[0]
        return (f"wave {first.wave}: error rate {first.detail['error_rate']:.0%} > "
                f"{first.detail['threshold']:.0%}")
    crashed = unfinished_waves(ctx)
    return f"wave {crashed[0]} did not finish (a task failed)" if crashed else None


def last_wave_activity(ctx: RunContext, wave: str):
    """When the wave last applied something (or started): its soak counts from then."""
    events = ctx.events(Action.WAVE_STARTED, Action.APPLIED, Action.APPLY_FAILED, Action.APPLY_SKIPPED)
    return [e for e in events if e.wave == wave][-1].at
