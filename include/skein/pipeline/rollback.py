"""Step 7, roll back: the exact previous bytes of every consumer this run applied (and of what
an interrupted earlier attempt left, ``skein.pipeline.rollback_scope``); and, before anything
else a run does, the rollback an earlier run decided and never finished."""

from __future__ import annotations

from dataclasses import dataclass

from skein.apply import ApplyError, applier_for
from skein.audit import Action
from skein.catalog import Consumer
from skein.faults import crash_point
from skein.paths import run_folder
from skein.pipeline.apply import consumer_lease, target_for
from skein.pipeline.context import RunContext
from skein.pipeline.live import refresh_summary
from skein.pipeline.rollback_scope import Write, pending_rollbacks, rollback_reason_of, writes_to_undo
from skein.rundir import RunDirectory
from skein.store import sha256


@dataclass(frozen=True)
class RolledBack:
    restored: list[str]
    verified: bool
    problems: dict[str, str]
    run_id: str | None = None  # whose rollback it is


def rollback(ctx: RunContext, reason: str = "") -> RolledBack:
    """Restore every consumer this run started to apply (and every write an interrupted
    earlier attempt left), in reverse apply order, and check each one's hash against the one
    recorded before applying. Retried, it goes on where it stopped."""
    ctx.claim_run()  # a writer, like apply: only while this run holds its campaign
    ctx.record(Action.ROLLBACK_STARTED, message=reason)
    result = _undo(ctx, ctx.run_id, reason)
    refresh_summary(ctx, "the rollback")
    return result


def finish_interrupted_rollbacks(ctx: RunContext) -> list[RolledBack]:
    """Finish every rollback of the campaign that a run decided and never closed (killed in
    the middle, or between its failed wave and its rollback), whatever this run's id: the
    first thing a run does once it holds the campaign. Each is recorded in the log of the run
    that decided it (and that run finished as ``rolled_back``), and named in this run's log
    (``rollback_resumed``) with what it restored and what it could not."""
    done = []
    for run_id in pending_rollbacks(ctx.store, ctx.campaign_id):
        by = "on a rerun" if run_id == ctx.run_id else f"by run {ctx.run_id}"
        reason = f"{rollback_reason_of(ctx.store, ctx.campaign_id, run_id)} (interrupted; finished {by})"
        ctx.store.record(ctx.campaign_id, run_id, ctx.actor, Action.ROLLBACK_STARTED, message=reason,
                         by_run=ctx.run_id)
        result = _undo(ctx, run_id, reason)
        if run_id != ctx.run_id:  # that run's own finalize never came: its log ends here
            ctx.store.record(ctx.campaign_id, run_id, ctx.actor, Action.FINISHED, status="rolled_back",
                             rolled_back=len(result.restored), not_restored=len(result.problems),
                             by_run=ctx.run_id)
        ctx.record(Action.ROLLBACK_RESUMED, run=run_id, restored=result.restored,
                   not_restored=result.problems, message=f"finished the interrupted rollback of run "
                   f"{run_id}: {len(result.restored)} restored, {len(result.problems)} not restored")
        done.append(result)
    return done


def _undo(ctx: RunContext, run_id: str, reason: str) -> RolledBack:
    """Put back every write of ``run_id``'s rollback scope, recorded in ``run_id``'s log."""
    def record(action: Action, **kwargs) -> None:
        ctx.store.record(ctx.campaign_id, run_id, ctx.actor, action, **kwargs)

    catalogs: dict[str, dict[str, Consumer] | None] = {}
    restored, problems = [], {}
    for write in writes_to_undo(ctx.store, ctx.campaign_id, run_id):
        cid = write.consumer
        extra = {} if write.run_id == run_id else {"written_by": write.run_id}
        if write.done:  # an earlier attempt of this rollback restored it
            restored.append(cid)
            continue
        if write.never_written:
            record(Action.ROLLBACK_SKIPPED, consumer=cid, message="never written by this run", **extra)
            continue
        try:
            now = _restore(ctx, _consumer(ctx, catalogs, write), write, reason, run_id)
        except Exception as exc:  # noqa: BLE001 - every consumer gets its try
            problems[cid] = str(exc) if isinstance(exc, ApplyError) else f"{type(exc).__name__}: {exc}"
            record(Action.ROLLBACK_FAILED, consumer=cid, before=write.before, message=problems[cid], **extra)
            continue
        if now != write.before:
            problems[cid] = f"hash after restore {str(now)[:12]} != pre-campaign {str(write.before)[:12]}"
            record(Action.ROLLBACK_FAILED, consumer=cid, before=write.before, after=now,
                   message=problems[cid], **extra)
            continue
        record(Action.ROLLED_BACK, consumer=cid, before=write.before, after=now, **extra)
        restored.append(cid)
        crash_point("rollback:after_restore")  # restored and recorded: the next one not yet
    record(Action.CAMPAIGN_ROLLED_BACK if not problems else Action.ROLLBACK_INCOMPLETE,
           restored=len(restored), problems=len(problems))
    return RolledBack(restored=restored, verified=not problems, problems=problems, run_id=run_id)


def _consumer(ctx: RunContext, catalogs: dict, write: Write) -> Consumer:
    """Where the consumer lives: this run's catalog, else the catalog of the run that wrote
    it (a rollback finished by a later run, before that run's discovery)."""
    for run_id in dict.fromkeys((ctx.run_id, write.run_id)):
        if run_id not in catalogs:
            files = ctx.files if run_id == ctx.run_id else RunDirectory(ctx.directory.parent / run_folder(run_id))
            try:
                catalogs[run_id] = files.catalog().by_id()
            except (OSError, EOFError):
                catalogs[run_id] = None
        found = (catalogs[run_id] or {}).get(write.consumer)
        if found is not None:
            return found
    raise ApplyError(f"{write.consumer}: no catalog of run {write.run_id} names it (its run "
                     "directory is gone): where it lives is unknown, left as it is")


def _restore(ctx: RunContext, consumer: Consumer, write: Write, reason: str, run_id: str) -> str | None:
    """Put ``write.before``'s bytes back if the consumer still holds what was written (only
    that: never a person's later edit); returns the hash it holds afterwards."""
    target = target_for(ctx, consumer)
    applier = applier_for(target)
    now = sha256(applier.current(target))
    if now not in (write.before, write.ours):
        raise ApplyError(f"changed since this run applied it (hash {str(now)[:12]}, "
                         f"applied {str(write.ours)[:12]}): left as it is")
    if now != write.before:
        message = (f"skein({ctx.campaign_id}): roll back {consumer.path or consumer.id} to "
                   f"{ctx.campaign.source}\n\nCampaign {ctx.campaign_id}, run {run_id}: "
                   f"{reason or 'rolled back'}.\n")
        with consumer_lease(ctx, target):
            applier.write(target, ctx.store.blob(write.before), message, expected=now)
            crash_point("rollback:after_write")  # restored, not yet recorded
        now = sha256(applier.current(target))
    return now
