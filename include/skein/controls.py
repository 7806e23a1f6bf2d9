"""A person's controls over a campaign: pause and resume it, skip or escalate a consumer (and
release it again), mark failed consumers for the next run.

Each control is one audit event naming who (``user:<id>``), so there is no second copy of
the state to drift from the log: the latest event decides. They are campaign-wide, not of
one run (their run id is ``NO_RUN``), and the engine reads them before it writes anything:
a paused campaign applies nothing more, a held (skipped or escalated) consumer is in no
later wave (``skein.pipeline.apply``, ``skein.pipeline.waves``).

>>> store = CampaignStore("sqlite://")
>>> _ = pause(store, "demo", "user:alice", "the owners asked to wait")
>>> paused(store, "demo").actor
'user:alice'
>>> pause(store, "demo", "user:bob")
Traceback (most recent call last):
...
skein.controls.ControlError: campaign demo is already paused (by user:alice)
>>> _ = resume(store, "demo", "user:alice"); paused(store, "demo") is None
True
"""

from __future__ import annotations

import sqlalchemy as sa

from skein.audit import CONSUMER_STATES, HOLD_DECISIONS, HOLDS, Action
from skein.errors import SkeinError
from skein.store import CampaignStore, Event, consumers

NO_RUN = "-"  # the run id of a campaign-wide control: it belongs to no run


class ControlError(SkeinError):
    """A control that does not apply (already paused, unknown or applied consumer...)."""


def paused(store: CampaignStore, campaign: str) -> Event | None:
    """The event that paused the campaign, or None when it is not paused."""
    latest = store.latest(campaign, (Action.CAMPAIGN_PAUSED, Action.CAMPAIGN_RESUMED))
    return latest if latest is not None and latest.action == Action.CAMPAIGN_PAUSED else None


def pause(store: CampaignStore, campaign: str, actor: str, reason: str | None = None) -> int:
    """Stop the campaign applying anything (a wave being applied stops at its next consumer)."""
    current = paused(store, campaign)
    if current is not None:
        raise ControlError(f"campaign {campaign} is already paused (by {current.actor})")
    return store.record(campaign, NO_RUN, actor, Action.CAMPAIGN_PAUSED, message=reason)


def resume(store: CampaignStore, campaign: str, actor: str, reason: str | None = None) -> int:
    """Let the campaign apply again (the run waiting, or the next one, goes on)."""
    if paused(store, campaign) is None:
        raise ControlError(f"campaign {campaign} is not paused")
    return store.record(campaign, NO_RUN, actor, Action.CAMPAIGN_RESUMED, message=reason)


def holds(store: CampaignStore, campaign: str) -> dict[str, Event]:
    """Consumer -> the person's decision keeping it out of later waves (skipped, escalated),
    for the consumers whose latest such decision was not lifted (released)."""
    latest = {e.consumer: e for e in store.events(campaign, actions=HOLD_DECISIONS) if e.consumer}
    return {cid: e for cid, e in latest.items() if e.action in HOLDS}


def hold(store: CampaignStore, campaign: str, consumer: str) -> Event | None:
    """The decision keeping ``consumer`` out of later waves, or None when it is not held."""
    latest = store.latest(campaign, HOLD_DECISIONS, consumer=consumer)
    return latest if latest is not None and latest.action in HOLDS else None


def hold_reason(event: Event) -> str:
    """``skipped by user:alice: <why>`` for a hold event."""
    return describe_hold(event.action, event.actor, event.detail.get("message"))


def describe_hold(action: str, actor: str, why: str | None) -> str:
    """A hold as people read it.

    >>> describe_hold("consumer_escalated", "user:bob", "needs review")
    'escalated by user:bob: needs review'
    """
    return f"{action.removeprefix('consumer_')} by {actor}" + (f": {why}" if why else "")


def skip(store: CampaignStore, campaign: str, consumer: str, actor: str,
         reason: str | None = None, **detail) -> int:
    """Leave ``consumer`` out of every later wave (``detail``: kept with the event, e.g. the
    ``bulk`` id of a bulk action)."""
    _check_holdable(store, campaign, consumer)
    return store.record(campaign, NO_RUN, actor, Action.CONSUMER_SKIPPED, consumer=consumer,
                        message=reason, **detail)


def escalate(store: CampaignStore, campaign: str, consumer: str, actor: str, reason: str,
             **detail) -> int:
    """Give ``consumer`` to a human (the front end notifies): no later wave applies it."""
    _check_holdable(store, campaign, consumer)
    return store.record(campaign, NO_RUN, actor, Action.CONSUMER_ESCALATED, consumer=consumer,
                        message=reason, **detail)


def release(store: CampaignStore, campaign: str, consumer: str, actor: str,
            reason: str | None = None, **detail) -> int:
    """Lift a skip or an escalation: ``consumer`` is in the later waves again (its wave in
    the run under way, if that wave has not started, else the next run's).

    >>> from skein.views.status import example_row
    >>> store = CampaignStore("sqlite://")
    >>> store.index_consumers("demo", "r1", [example_row("r/a.sql")])
    >>> _ = skip(store, "demo", "r/a.sql", "user:alice", "owner on leave")
    >>> sorted(holds(store, "demo"))
    ['r/a.sql']
    >>> _ = release(store, "demo", "r/a.sql", "user:bob", "owner is back")
    >>> holds(store, "demo"), hold(store, "demo", "r/a.sql")
    ({}, None)
    >>> release(store, "demo", "r/a.sql", "user:bob")
    Traceback (most recent call last):
    ...
    skein.controls.ControlError: r/a.sql is neither skipped nor escalated: nothing to release
    """
    if not known_consumer(store, campaign, consumer):
        raise ControlError(f"{consumer} is not a consumer of campaign {campaign}")
    if hold(store, campaign, consumer) is None:
        raise ControlError(f"{consumer} is neither skipped nor escalated: nothing to release")
    return store.record(campaign, NO_RUN, actor, Action.CONSUMER_RELEASED, consumer=consumer,
                        message=reason, **detail)


def request_retry(store: CampaignStore, campaign: str, ids: list[str], actor: str) -> list[str]:
    """Mark ``ids`` (failed consumers) for the next run; returns those newly marked."""
    already = pending_retries(store, campaign)
    marked = [cid for cid in ids if cid not in already]
    for cid in marked:
        store.record(campaign, NO_RUN, actor, Action.RETRY_REQUESTED, consumer=cid)
    return marked


def pending_retries(store: CampaignStore, campaign: str, *,
                    run_id: str | None = None) -> dict[str, Event]:
    """Retry marks no run has started since (the next run's discover step takes them);
    ``run_id``: as that run sees them, its own start not counted."""
    starts = [e for e in store.events(campaign, actions=(Action.RUN_STARTED,)) if e.run_id != run_id]
    since = starts[-1].id if starts else 0
    return {e.consumer: e for e in store.events(campaign, actions=(Action.RETRY_REQUESTED,))
            if e.consumer and e.id > since}


def _check_holdable(store: CampaignStore, campaign: str, consumer: str) -> None:
    if not known_consumer(store, campaign, consumer):
        raise ControlError(f"{consumer} is not a consumer of campaign {campaign}")
    state = store.latest(campaign, CONSUMER_STATES, consumer=consumer)
    if state is not None and state.action in (Action.APPLIED, Action.APPLY_STARTED):
        raise ControlError(f"{consumer} is already applied (run {state.run_id}): a skip or "
                           "escalation only keeps consumers out of later waves")
    current = hold(store, campaign, consumer)
    if current is not None:
        raise ControlError(f"{consumer} is already {current.action.removeprefix('consumer_')} "
                           f"(by {current.actor})")


def known_consumer(store: CampaignStore, campaign: str, consumer: str) -> bool:
    """Whether a run of ``campaign`` planned ``consumer`` (``skein_consumers``)."""
    with store.engine.connect() as conn:
        return conn.execute(sa.select(consumers.c.consumer).where(consumers.c.campaign == campaign)
                            .where(consumers.c.consumer == consumer)).first() is not None
