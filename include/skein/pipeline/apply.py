"""Step 5, apply a wave: each consumer at most once, ever, through ``skein.apply``'s appliers.

What the store says was applied and the consumer's current bytes decide (content hashes),
so a retried task or a rerun never writes twice, and one consumer failing fails only itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from skein.apply import ApplyError, Target, applier_for
from skein.audit import Action
from skein.catalog import Consumer
from skein.controls import hold, hold_reason, paused
from skein.faults import crash_point
from skein.pipeline.context import RunContext
from skein.pipeline.live import refresh_summary
from skein.rewrite.request import Patch
from skein.store import Event, sha256


@dataclass(frozen=True)
class Applied:
    applied: list[str]  # written now
    already: list[str]  # written earlier (a retried task, a rerun): not written again
    verified: list[str]  # unchanged consumers: nothing to write
    failed: dict[str, str]
    held: list[str] = field(default_factory=list)  # skipped or escalated by a person
    paused: list[str] = field(default_factory=list)  # not reached: the campaign was paused


def target_for(ctx: RunContext, consumer: Consumer) -> Target:
    """Where ``consumer`` lives: a file in its git repository, or a warehouse view."""
    if consumer.kind == "view":
        return Target(consumer=consumer.id, kind="view", campaign=ctx.campaign_id,
                      view=consumer.id.split("/", 1)[1], warehouse=ctx.campaign.warehouse,
                      base_dir=ctx.campaign.base_dir)
    repo = repository_of(consumer)
    if repo is None:
        raise ApplyError(f"{consumer.id}: no file to apply to")
    return Target(consumer=consumer.id, kind="file", campaign=ctx.campaign_id, repo=repo,
                  path=consumer.path)


def repository_of(consumer: Consumer) -> Path | None:
    """The folder of the git repository holding a file consumer (None for a view)."""
    if consumer.kind == "view" or consumer.file is None or consumer.path is None:
        return None
    # Absolute but not resolved: resolving would follow a symlinked consumer into whatever
    # repository it points at, and write there.
    repo = Path(os.path.abspath(consumer.file))
    for _ in consumer.path.split("/"):
        repo = repo.parent
    return repo


def lease_name(target: Target) -> str:
    """The store lease of what a target writes: the same file or view, whichever campaign.

    >>> from pathlib import Path
    >>> lease_name(Target(consumer="r/q.sql", kind="file", campaign="c", repo=Path("/g/r"), path="q.sql"))
    'consumer:file:/g/r:q.sql'
    """
    if target.kind == "file":
        return f"consumer:file:{target.repo}:{target.path}"
    return f"consumer:view:{target.warehouse}:{target.view}"


@contextmanager
def consumer_lease(ctx: RunContext, target: Target, ttl_s: float = 600.0) -> Iterator[None]:
    """Hold ``target`` for this run while it is written: two campaigns (on any host sharing
    the store) never interleave their writes to one consumer. The lease expires by itself
    should the writer die."""
    other = ctx.lease(lease_name(target), ttl_s=ttl_s)
    if other is not None:
        raise ApplyError(f"{target.consumer} is being changed by {other.describe()}: try again "
                         "when that write is done")
    try:
        yield
    finally:
        ctx.store.release(lease_name(target), ctx.holder)


def apply_wave(ctx: RunContext, wave: str, ids: list[str]) -> Applied:
    """Apply the batch ``ids`` of ``wave`` (only while this run holds its campaign). A person's
    controls are read before each consumer: a pause stops the batch there (audited once, with
    the consumers left), a skipped or escalated consumer is held, not applied."""
    ctx.claim_run()
    results = ctx.results()
    by_id = ctx.catalog().by_id()
    states = ctx.store.consumer_states(ctx.campaign_id)
    planned = {e.consumer: e for e in ctx.events(Action.PATCHED)}
    done = Applied([], [], [], {})
    applied, already, verified, failed = done.applied, done.already, done.verified, done.failed
    for number, cid in enumerate(ids):
        ctx.progress(f"apply {wave}", number, len(ids), cid)
        control = person_control(ctx, wave, ids[number:])
        if control == "paused":
            done.paused.extend(ids[number:])
            break
        if control == "held":
            done.held.append(cid)
            continue
        patch = results.get(cid)
        if not isinstance(patch, Patch):
            ctx.record(Action.VERIFIED, consumer=cid, wave=wave, message="unchanged; its upstream changed")
            verified.append(cid)
            continue
        try:
            outcome = _apply_one(ctx, wave, by_id[cid], patch, states.get(cid), planned.get(cid))
        except Exception as exc:  # noqa: BLE001 - one consumer failing fails only itself
            message = str(exc) if isinstance(exc, ApplyError) else f"{type(exc).__name__}: {exc}"
            ctx.record(Action.APPLY_FAILED, consumer=cid, wave=wave, message=message)
            failed[cid] = message
            continue
        (applied if outcome == "applied" else already).append(cid)
    refresh_summary(ctx, f"applying wave {wave}")
    return done


def person_control(ctx: RunContext, wave: str, rest: list[str]) -> Literal["paused", "held"] | None:
    """What a person decided about ``rest[0]``, the next consumer to apply: ``paused`` (the
    campaign is: ``rest`` is not applied), ``held`` (skipped or escalated), or None. Read
    from the store before each consumer, so a pause takes effect at the next write; audited."""
    pause = paused(ctx.store, ctx.campaign_id)
    if pause is not None:
        ctx.record(Action.APPLY_PAUSED, wave=wave, consumers=rest,
                   message=f"campaign paused by {pause.actor}: {len(rest)} consumer(s) not applied")
        return "paused"
    held = hold(ctx.store, ctx.campaign_id, rest[0])
    if held is None:
        return None
    ctx.record(Action.HELD, consumer=rest[0], wave=wave, message=hold_reason(held))
    return "held"


def _apply_one(ctx: RunContext, wave: str, consumer: Consumer, patch: Patch, prior: Event | None,
               planned: Event | None) -> Literal["applied", "already"]:
    target = target_for(ctx, consumer)
    applier = applier_for(target)
    current = applier.current(target)
    now = sha256(current)
    new = patch.text.encode("utf-8")
    if prior is not None and prior.action == Action.APPLIED and prior.after_hash == now:
        ctx.record(Action.APPLY_SKIPPED, consumer=consumer.id, wave=wave, before=prior.before_hash,
                   after=now, message=f"already applied by run {prior.run_id}")
        return "already"
    expected = planned.before_hash if planned is not None else None
    if _interrupted_write(prior, now, expected, target):
        ctx.record(Action.APPLIED, consumer=consumer.id, wave=wave, before=prior.before_hash, after=now,
                   message="found applied after an interrupted attempt")
        return "already"
    refused = applier.refusal(target)
    if refused:
        raise ApplyError(refused)
    if expected is not None and now != expected:
        raise ApplyError(f"{consumer.id} changed since it was planned (hash {str(now)[:12]}, "
                         f"planned from {expected[:12]}): re-run the campaign to re-plan it")
    base_refusal(consumer.id, patch, now)
    if current is not None:
        ctx.store.put_blob(current)
    ctx.store.put_blob(new)
    with consumer_lease(ctx, target):
        # the bytes it will hold (a git work tree's eol/ident): how a rerun knows it done
        expected_after = getattr(applier, "stored_form", lambda _, content: content)(target, new)
        ctx.record(Action.APPLY_STARTED, consumer=consumer.id, wave=wave, before=now,
                   after=sha256(expected_after))
        stored = applier.write(target, new, _commit_message(ctx, consumer, wave), expected=now)
        crash_point("apply:after_write")  # written, not yet recorded
    ctx.record(Action.APPLIED, consumer=consumer.id, wave=wave, before=now, after=sha256(stored),
               **_where_written(applier, target))
    return "applied"


def base_refusal(cid: str, patch: Patch, now: str | None) -> None:
    """Refuse a patch that is not the consumer's, or was computed from other content than
    the consumer holds now: writing it would replace code nobody reviewed against it.

    >>> p = Patch(consumer_id="r/a.sql", agent="rule", original="SELECT 1", text="x", changes=[])
    >>> base_refusal("r/a.sql", p, p.base_hash)
    >>> base_refusal("r/b.sql", p, p.base_hash)
    Traceback (most recent call last):
    skein.apply.ApplyError: r/b.sql: the patch found for it is r/a.sql's: not written
    >>> base_refusal("r/a.sql", p, "0" * 64)
    Traceback (most recent call last):
    skein.apply.ApplyError: r/a.sql: the patch was computed from other content (base e004ebd5b553, the consumer is 000000000000 now): not written; re-run the campaign to re-plan it
    """
    if patch.consumer_id != cid:
        raise ApplyError(f"{cid}: the patch found for it is {patch.consumer_id}'s: not written")
    if patch.base_hash != now:
        raise ApplyError(f"{cid}: the patch was computed from other content (base "
                         f"{patch.base_hash[:12]}, the consumer is {str(now)[:12]} now): not "
                         "written; re-run the campaign to re-plan it")


def _where_written(applier, target: Target) -> dict[str, str]:
    """What a reviewer opens to see the change: the merge commit, or the view replaced."""
    commit = getattr(applier, "last_commit", None)
    if commit:
        return {"commit": commit, "repository": str(target.repo)}
    return {"view": target.view} if target.view else {}


def settle_interrupted_writes(ctx: RunContext) -> list[str]:
    """A run first finishes the records of writes an earlier attempt made but never recorded
    (killed between the write and the audit row), its own or another run's (a plain rerun
    gets a new run id): once re-planned, such a consumer no longer reads the source and
    would drop out of the plan with its write unrecorded. Only one run of a campaign runs
    at a time, so an attempt still "started" is dead. Returns the consumers found applied."""
    by_id = ctx.catalog().by_id()
    found = []
    for cid, event in ctx.store.consumer_states(ctx.campaign_id).items():
        if event.action != Action.APPLY_STARTED or cid not in by_id:
            continue
        try:
            target = target_for(ctx, by_id[cid])
            now = sha256(applier_for(target).current(target))
        except ApplyError:  # its repository is gone: its apply step says so, if planned
            continue
        if _interrupted_write(event, now, event.before_hash, target):
            # Another run's write keeps its author: a rollback says whose write it undid.
            by = {} if event.run_id == ctx.run_id else {"written_by": event.run_id}
            of = f" of run {event.run_id}" if by else ""
            ctx.record(Action.APPLIED, consumer=cid, wave=event.wave, before=event.before_hash,
                       after=now, message=f"found applied after an interrupted attempt{of}", **by)
            found.append(cid)
    return found


def _interrupted_write(prior: Event | None, now: str | None, expected: str | None,
                       target: Target) -> bool:
    """The write happened, the record of it did not (the worker died in between). Only for
    an attempt at this plan's starting point: an older run's attempt whose "before" differs
    (a human edited the consumer since, and this run planned the edit) is stale."""
    return (prior is not None and prior.action == Action.APPLY_STARTED and now != prior.before_hash
            and (expected is None or expected == prior.before_hash)
            and (target.kind != "file" or now == prior.after_hash))


def _commit_message(ctx: RunContext, consumer: Consumer, wave: str) -> str:
    where = consumer.path or consumer.id
    return (f"skein({ctx.campaign_id}): {where} reads {ctx.campaign.target} instead of "
            f"{ctx.campaign.source}\n\nCampaign {ctx.campaign_id}, run {ctx.run_id}, "
            f"wave {wave}.\nEvidence: {ctx.files.evidence_file(consumer.id)}\n")
