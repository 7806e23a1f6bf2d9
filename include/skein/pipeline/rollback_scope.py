"""What a rollback must undo, and which rollbacks are still owed: read from the audit log only.

A rollback is a durable intention. Once a run decided it (``wave_failed`` or
``rollback_started``) it stays owed until that run's log closes it (``campaign_rolled_back`` or
``rollback_incomplete``), whatever killed the process in between; the next attempt of the
campaign, with any run id, finishes it (``skein.pipeline.rollback.finish_interrupted_rollbacks``).

A run undoes what it wrote, and what an interrupted earlier attempt wrote that no finished run
took over since: one run of a campaign at a time (``run:<campaign>`` lease), so a write after
the campaign's last ``finished`` event by another run belongs to an attempt that died, and the
run that continues the campaign inherits it.

>>> from skein.store import CampaignStore
>>> store = CampaignStore("sqlite://")
>>> store.record("c", "a", "cli", "apply_started", consumer="r/x.sql", before="0" * 64, after="1" * 64)
1
>>> store.record("c", "a", "cli", "wave_failed", wave="canary")  # killed before rolling back
2
>>> pending_rollbacks(store, "c")
['a']
>>> [(w.consumer, w.run_id, w.done) for w in writes_to_undo(store, "c", "b")]  # inherited by run b
[('r/x.sql', 'a', False)]
>>> store.record("c", "z", "cli", "applied", consumer="r/y.sql", before="0" * 64, after="2" * 64)
3
>>> store.record("c", "z", "cli", "monitor_failed", consumer="r/y.sql")  # applied, then checked
4
>>> [(w.consumer, w.run_id) for w in writes_to_undo(store, "c", "b")]  # newest first
[('r/y.sql', 'z'), ('r/x.sql', 'a')]
>>> store.record("c", "a", "cli", "finished", status="failed")  # a finished run took them over
5
>>> writes_to_undo(store, "c", "b")
[]
"""

from __future__ import annotations

from dataclasses import dataclass

from skein.audit import Action
from skein.store import CampaignStore, Event

INTENTS = (Action.WAVE_FAILED, Action.ROLLBACK_STARTED)
CLOSES = (Action.CAMPAIGN_ROLLED_BACK, Action.ROLLBACK_INCOMPLETE)
WRITES = (Action.APPLY_STARTED, Action.APPLIED)


@dataclass(frozen=True)
class Write:
    """One consumer a rollback puts back: ``before`` is its pre-campaign content hash,
    ``ours`` what the run wrote (only that is overwritten: never a person's later edit)."""

    consumer: str
    before: str | None
    ours: str | None
    run_id: str  # the run that wrote it
    order: int  # the audit id of its first write event: rollbacks go newest first
    done: bool  # already restored (an earlier attempt of this rollback got that far)
    never_written: bool = False  # its apply failed before writing: nothing to undo


def pending_rollbacks(store: CampaignStore, campaign: str) -> list[str]:
    """Runs whose rollback was decided and never closed, the newest decision first."""
    intent: dict[str, int] = {}
    closed: dict[str, int] = {}
    for event in store.events(campaign, actions=INTENTS + CLOSES):
        (intent if event.action in INTENTS else closed)[event.run_id] = event.id
    open_runs = [run for run, at in intent.items() if at > closed.get(run, 0)]
    return sorted(open_runs, key=intent.__getitem__, reverse=True)


def rollback_reason_of(store: CampaignStore, campaign: str, run_id: str) -> str:
    """Why ``run_id`` decided to roll back, as its log says (for a rollback finished later)."""
    events = store.events(campaign, run_id, actions=INTENTS)
    started = [e for e in events if e.action == Action.ROLLBACK_STARTED and e.detail.get("message")]
    if started:
        return started[-1].detail["message"]
    failed = [e for e in events if e.action == Action.WAVE_FAILED]
    if failed:
        detail = failed[0].detail
        return (f"wave {failed[0].wave}: error rate {detail.get('error_rate', 0):.0%} > "
                f"{detail.get('threshold', 0):.0%}")
    return "rollback decided"


def writes_to_undo(store: CampaignStore, campaign: str, run_id: str) -> list[Write]:
    """Every consumer ``run_id`` started to write, and every write an interrupted earlier
    attempt left that no finished run took over, newest first (reverse apply order: waves
    apply in dependency order, so readers are undone before what they read)."""
    latest = store.consumer_states(campaign)
    own = _first_and_last(store.events(campaign, run_id, actions=WRITES + (Action.APPLY_FAILED,)))
    writes = [_write(cid, first, last, latest.get(cid), run_id) for cid, (first, last) in own.items()]
    finished = [e.id for e in store.events(campaign, actions=(Action.FINISHED,))]
    last_finished = max(finished, default=0)
    inherited: dict[str, list[str]] = {}
    for cid, state in latest.items():
        if (cid not in own and state.run_id != run_id and state.id > last_finished
                and state.action in (*WRITES, Action.MONITOR_FAILED)):  # written, maybe monitored
            inherited.setdefault(state.run_id, []).append(cid)
    for other, ids in inherited.items():
        theirs = _first_and_last(store.events(campaign, other, actions=WRITES))
        writes += [_write(cid, *theirs[cid], latest[cid], other) for cid in ids if cid in theirs]
    return sorted(writes, key=lambda w: w.order, reverse=True)


def _first_and_last(events: list[Event]) -> dict[str, tuple[Event, Event | None]]:
    """Per consumer: its first write event (the first attempt's "before" is the pre-campaign
    content) and its last ``applied`` / ``apply_failed`` after it (what became of it)."""
    out: dict[str, tuple[Event, Event | None]] = {}
    for event in events:
        if event.consumer not in out:
            if event.action in WRITES:
                out[event.consumer] = (event, event if event.action == Action.APPLIED else None)
        elif event.action != Action.APPLY_STARTED:
            out[event.consumer] = (out[event.consumer][0], event)
    return out


def _write(cid: str, first: Event, last: Event | None, state: Event | None, run_id: str) -> Write:
    applied = last is not None and last.action == Action.APPLIED
    ours = last.after_hash if applied else first.after_hash
    done = state is not None and state.action == Action.ROLLED_BACK and state.id > first.id
    # The apply failed before its write (refused, changed since planned): nothing of ours is
    # there. A failure after the write cannot be told from the log: the hashes decide then.
    never = (not applied and last is not None and last.action == Action.APPLY_FAILED
             and state is not None and state.action == Action.APPLY_FAILED)
    # A write an earlier attempt made and this run only recorded stays that attempt's.
    run_id = first.detail.get("written_by") or run_id
    return Write(consumer=cid, before=first.before_hash, ours=ours, run_id=run_id, order=first.id,
                 done=done, never_written=never)
