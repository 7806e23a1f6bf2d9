"""Step 7, roll back: the exact previous bytes of every consumer this run applied."""

from __future__ import annotations

from dataclasses import dataclass

from skein.apply import ApplyError, applier_for
from skein.audit import Action
from skein.catalog import Consumer
from skein.pipeline.apply import consumer_lease, target_for
from skein.pipeline.context import RunContext
from skein.pipeline.live import refresh_summary
from skein.store import Event, sha256


@dataclass(frozen=True)
class RolledBack:
    restored: list[str]
    verified: bool
    problems: dict[str, str]


def rollback(ctx: RunContext, reason: str = "") -> RolledBack:
    """Restore every consumer this run started to apply, in reverse apply order, and check
    each one's hash against the one recorded before applying."""
    ctx.record(Action.ROLLBACK_STARTED, message=reason)
    # Everything this run started to apply, even if the record of the write is missing; the
    # first attempt's "before" is the pre-campaign content.
    started: dict[str, Event] = {}
    for event in ctx.events(Action.APPLY_STARTED):
        started.setdefault(event.consumer, event)
    last = ctx.store.consumer_states(ctx.campaign_id, ctx.run_id)
    written = {e.consumer: e for e in ctx.events(Action.APPLIED)}
    restored, problems = [], {}
    # Reverse apply order: waves apply in dependency order, so this undoes readers before
    # what they read, and it holds even for consumers a re-planned run no longer lists.
    for cid in reversed(started):
        before = started[cid].before_hash
        if cid not in written and last.get(cid) is not None and last[cid].action == Action.APPLY_FAILED:
            ctx.record(Action.ROLLBACK_SKIPPED, consumer=cid, message="never written by this run")
            continue
        # Only what this run wrote and nobody changed since: never a person's later edit.
        ours = written[cid].after_hash if cid in written else started[cid].after_hash
        try:
            now = _restore(ctx, ctx.catalog().by_id()[cid], before, ours, reason)
        except Exception as exc:  # noqa: BLE001 - every consumer gets its try
            problems[cid] = str(exc) if isinstance(exc, ApplyError) else f"{type(exc).__name__}: {exc}"
            ctx.record(Action.ROLLBACK_FAILED, consumer=cid, before=before, message=problems[cid])
            continue
        if now != before:
            problems[cid] = f"hash after restore {str(now)[:12]} != pre-campaign {before[:12]}"
            ctx.record(Action.ROLLBACK_FAILED, consumer=cid, before=before, after=now, message=problems[cid])
            continue
        ctx.record(Action.ROLLED_BACK, consumer=cid, before=before, after=now)
        restored.append(cid)
    ctx.record(Action.CAMPAIGN_ROLLED_BACK if not problems else Action.ROLLBACK_INCOMPLETE,
               restored=len(restored), problems=len(problems))
    refresh_summary(ctx, "the rollback")
    return RolledBack(restored=restored, verified=not problems, problems=problems)


def _restore(ctx: RunContext, consumer: Consumer, before: str | None, ours: str | None,
             reason: str) -> str | None:
    """Put ``before``'s bytes back if the consumer still holds what this run wrote; returns
    the hash it holds afterwards."""
    target = target_for(ctx, consumer)
    applier = applier_for(target)
    now = sha256(applier.current(target))
    if now not in (before, ours):
        raise ApplyError(f"changed since this run applied it (hash {str(now)[:12]}, "
                         f"applied {str(ours)[:12]}): left as it is")
    if now != before:
        with consumer_lease(ctx, target):
            _write_back(ctx, consumer, target, applier, before, now, reason)
        now = sha256(applier.current(target))
    return now


def _write_back(ctx: RunContext, consumer: Consumer, target, applier, before: str | None,
                now: str | None, reason: str) -> None:
    message = (f"skein({ctx.campaign_id}): roll back {consumer.path or consumer.id} to "
               f"{ctx.campaign.source}\n\nCampaign {ctx.campaign_id}, run {ctx.run_id}: "
               f"{reason or 'rolled back'}.\n")
    applier.write(target, ctx.store.blob(before), message, expected=now)
