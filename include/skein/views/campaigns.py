"""Campaign read models: the catalog's rows and one campaign's detail (waves with their
monitoring, consumers per owner), from the store's index and audit log.

Counts come from one ``GROUP BY`` over ``consumer_status``: a campaign of 10,000 consumers
is never loaded row by row.

>>> from skein.store import CampaignStore
>>> from skein.views.status import example_row
>>> store = CampaignStore("sqlite://")
>>> _ = store.record("demo", "r1", "cli", "run_started")
>>> _ = store.record("demo", "r1", "cli", "planned")
>>> store.index_consumers("demo", "r1", [example_row("r/a.sql"), example_row("r/b.sql", owner="ops")])
>>> _ = store.record("demo", "r1", "cli", "approval_requested", approvers=["alice"])
>>> row = catalog_row(Sources(store=store, home=Path("/nowhere")), "demo")
>>> row.state, row.counts, row.consumers
('awaiting approval', {'pending': 2}, 2)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path  # noqa: F401 - the doctest's
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel

from skein.approvals import CAMPAIGN_OPTIONS, WAVE_OPTIONS
from skein.audit import Action
from skein.controls import paused, pending_retries
from skein.statuses import what_is_left
from skein.views.sources import RunInfo, Sources, campaign_ids, campaign_spec, runs
from skein.store import consumers
from skein.views.status import STATUSES, consumer_status

# "done": nothing reads the source any more (every consumer applied or verified); a run that
# finished with consumers left makes the campaign "applied", and ``CampaignRow.left`` says
# what is left ("13 need a human (9 escalated, 4 blocked)").
CampaignState = Literal["not started", "planning", "planned", "awaiting approval", "rolling out",
                        "paused", "rolled back", "applied", "done", "rejected", "failed"]
_FINISHED: dict[str, CampaignState] = {
    "finished": "done", "rolled_back": "rolled back", "rejected": "rejected",
    "stopped": "rejected", "failed": "failed", "dry_run": "planned", "paused": "planned"}
_STATE_ACTIONS = (Action.PLANNED, Action.APPROVAL_REQUESTED, Action.APPROVAL_ANSWERED,
                  Action.APPROVED, Action.REJECTED, Action.WAVE_STARTED, Action.FINISHED)


class CampaignRow(BaseModel):
    """One line of the catalog."""

    campaign: str
    title: str | None
    source: str | None
    target: str | None
    owners: list[str]
    state: CampaignState
    paused_by: str | None = None
    paused_why: str | None = None  # the reason the person gave
    left: str | None = None  # what keeps the campaign from being done (skein.statuses.what_is_left)
    consumers: int
    counts: dict[str, int]  # consumers per status (skein.views.status)
    errors: int  # failed
    escalations: int
    last_run: RunInfo | None
    schedule: str | None = None  # the campaign's cron (None: runs when triggered)
    next_run: datetime | None = None  # the next scheduled run, from ``schedule``


class WaveView(BaseModel):
    """A wave of the latest run: its consumers, whether it ran, and its monitoring."""

    name: str
    share: float | None
    consumers: int
    counts: dict[str, int]
    decision: Literal["started", "skipped"] | None = None
    reason: str | None = None  # why it was skipped
    verdict: Literal["passed", "failed"] | None = None
    error_rate: float | None = None
    threshold: float | None = None
    failed: list[str] = []
    outcome: str = "not started"  # what the latest run did with it, in words (``wave_outcome``)


def wave_outcome(view: WaveView, latest: RunInfo | None) -> str:
    """What the latest run did with a wave, as a person reads it (a wave "started" in a run
    that has finished did not stay started).

    >>> run = RunInfo(run_id="r1", started_at=datetime(2026, 12, 1, tzinfo=UTC), status="finished")
    >>> wave_outcome(WaveView(name="canary", share=.1, consumers=2, counts={}, decision="started",
    ...                       verdict="passed"), run)
    'applied, monitoring passed'
    >>> wave_outcome(WaveView(name="canary", share=.1, consumers=2, counts={}, decision="started"), run)
    'started, no verdict (the run ended finished)'
    """
    if view.decision is None:
        return "not started"
    if view.decision == "skipped":
        return "skipped"
    if view.verdict is not None:
        return "applied, monitoring " + view.verdict
    if latest is not None and latest.status is not None:
        return f"started, no verdict (the run ended {latest.status})"
    return "applying"


class OwnerRow(BaseModel):
    owner: str
    consumers: int
    counts: dict[str, int]


class Facets(BaseModel):
    """The values each consumer filter can take in this campaign."""

    statuses: list[str]
    owners: list[str]
    tiers: list[int]
    kinds: list[str]
    waves: list[str]


class CampaignDetail(BaseModel):
    row: CampaignRow
    description: str | None
    approvers: list[str]
    waves: list[WaveView]
    owners: list[OwnerRow]
    facets: Facets
    runs: list[RunInfo]
    approval: dict | None  # the pending request of the latest run: wave, approvers
    pending_retries: int


def campaign_state(src: Sources, campaign_id: str, latest: RunInfo | None) -> CampaignState:
    """What the campaign is doing, from its latest run's events (a pause overrides them)."""
    if paused(src.store, campaign_id) is not None:
        return "paused"
    if latest is None:
        return "not started"
    if latest.status is not None:
        return _FINISHED.get(latest.status, "failed")
    events = src.store.events(campaign_id, latest.run_id, actions=_STATE_ACTIONS)
    actions = [e.action for e in events]
    last_decision = max((i for i, a in enumerate(actions) if a in (Action.APPROVED, Action.REJECTED)),
                        default=-1)
    if any(a == Action.APPROVAL_REQUESTED for a in actions[last_decision + 1:]):
        # answered in the portal: the run records the decision when it resumes, seconds later
        if actions[-1] == Action.APPROVAL_ANSWERED:
            scope = {**CAMPAIGN_OPTIONS, **WAVE_OPTIONS}.get(events[-1].detail.get("message"))
            return "rejected" if scope == "none" else "rolling out"
        return "awaiting approval"
    if Action.WAVE_STARTED in actions or (last_decision >= 0 and actions[last_decision] == Action.APPROVED):
        return "rolling out"
    return "planned" if Action.PLANNED in actions else "planning"


def catalog(src: Sources, allowed: set[str] | None = None) -> list[CampaignRow]:
    """A row per campaign (``allowed``: only these ids, e.g. those the user may read)."""
    return [catalog_row(src, cid) for cid in campaign_ids(src) if allowed is None or cid in allowed]


def catalog_row(src: Sources, campaign_id: str, by_owner: dict | None = None) -> CampaignRow:
    """``by_owner``: ``counts_by(src, campaign_id, "owner")``, when the caller has it."""
    spec = campaign_spec(src, campaign_id)
    history = runs(src.store, campaign_id)
    latest = history[-1] if history else None
    counts: Counter = Counter()
    for some in (by_owner if by_owner is not None else counts_by(src, campaign_id)).values():
        counts.update(some)
    pause = paused(src.store, campaign_id)
    left = what_is_left(counts) if latest is not None else None
    state = campaign_state(src, campaign_id, latest)
    return CampaignRow(
        campaign=campaign_id, title=spec.title if spec else None, source=spec.source if spec else None,
        target=spec.target if spec else None, owners=list(spec.owners) if spec else [],
        state="applied" if state == "done" and left else state, left=left,
        paused_by=pause.actor if pause else None,
        paused_why=pause.detail.get("message") if pause else None,
        consumers=sum(counts.values()), counts={s: counts[s] for s in STATUSES if counts[s]},
        errors=counts["failed"], escalations=counts["escalated"], last_run=latest,
        schedule=spec.rollout.schedule if spec else None,
        next_run=next_run(spec.rollout.schedule) if spec and pause is None else None)


def next_run(schedule: str | None, now: datetime | None = None) -> datetime | None:
    """When a campaign's cron schedule (or preset) fires next; None when it runs on trigger.

    >>> next_run("0 2 * * *", datetime(2026, 12, 3, 23, 0, tzinfo=UTC)).isoformat()
    '2026-12-04T02:00:00+00:00'
    >>> next_run("@daily", datetime(2026, 12, 3, 23, 0, tzinfo=UTC)).isoformat(), next_run(None)
    ('2026-12-04T00:00:00+00:00', None)
    """
    if not schedule:
        return None
    from croniter import croniter  # Airflow's own cron library; the engine does not need Airflow

    try:
        return croniter(schedule, now or datetime.now(UTC)).get_next(datetime)
    except (ValueError, KeyError):  # a preset croniter does not know (``@once``, ``@continuous``)
        return None


def counts_by(src: Sources, campaign_id: str, column: str | None = None) -> dict:
    """value of ``column`` (owner, wave...; None: one key, None) -> consumers per status."""
    s = consumer_status(campaign_id)
    keys = [s.c[column]] if column else []
    query = sa.select(*keys, s.c.status, sa.func.count()).group_by(*keys, s.c.status)
    out: dict = defaultdict(Counter)
    with src.store.engine.connect() as conn:
        for row in conn.execute(query):
            out[row[0] if column else None][row[-2]] += row[-1]
    return dict(out)


def distinct(src: Sources, campaign_id: str, column: str) -> list:
    """The values of an index column in the campaign (filters' choices; no audit log read)."""
    with src.store.engine.connect() as conn:
        return sorted(v for v in conn.execute(sa.select(consumers.c[column]).distinct()
                                              .where(consumers.c.campaign == campaign_id)).scalars()
                      if v is not None)


def campaign_detail(src: Sources, campaign_id: str) -> CampaignDetail:
    """The campaign page: its row, waves, owners, filter values, runs and pending approval."""
    by_owner, by_wave = counts_by(src, campaign_id, "owner"), counts_by(src, campaign_id, "wave")
    row = catalog_row(src, campaign_id, by_owner)
    spec = campaign_spec(src, campaign_id)
    owners = [OwnerRow(owner=o, consumers=sum(c.values()), counts=dict(c))
              for o, c in sorted(by_owner.items())]
    wave_names = [w.name for w in spec.rollout.waves] if spec else sorted(w for w in by_wave if w)
    return CampaignDetail(
        row=row, description=spec.description if spec else None,
        approvers=list(spec.rollout.approvers) if spec else [],
        waves=wave_views(src, campaign_id, row.last_run, spec, by_wave),
        owners=owners,
        facets=Facets(statuses=[s for s in STATUSES if row.counts.get(s)], owners=sorted(by_owner),
                      tiers=distinct(src, campaign_id, "tier"), kinds=distinct(src, campaign_id, "kind"),
                      waves=wave_names),
        runs=runs(src.store, campaign_id),
        approval=pending_approval(src, campaign_id, row.last_run) if row.state == "awaiting approval" else None,
        pending_retries=len(pending_retries(src.store, campaign_id)))


def wave_views(src: Sources, campaign_id: str, latest: RunInfo | None, spec, by_wave) -> list[WaveView]:
    """The waves, in rollout order, with what the latest run decided and monitored."""
    shares = {w.name: w.share for w in spec.rollout.waves} if spec else {}
    names = list(shares) or sorted(w for w in by_wave if w)
    views = {n: WaveView(name=n, share=shares.get(n), consumers=sum(by_wave.get(n, {}).values()),
                         counts=dict(by_wave.get(n, {}))) for n in names}
    events = src.store.events(campaign_id, latest.run_id, actions=(
        Action.WAVE_STARTED, Action.WAVE_SKIPPED, Action.WAVE_PASSED, Action.WAVE_FAILED)) if latest else []
    for e in events:
        view = views.get(e.wave)
        if view is None:
            continue
        if e.action in (Action.WAVE_STARTED, Action.WAVE_SKIPPED):
            view.decision = "started" if e.action == Action.WAVE_STARTED else "skipped"
            view.reason = e.detail.get("message")
        else:
            view.verdict = "passed" if e.action == Action.WAVE_PASSED else "failed"
            view.error_rate, view.threshold = e.detail.get("error_rate"), e.detail.get("threshold")
            view.failed = list(e.detail.get("failed") or [])
    for view in views.values():
        view.outcome = wave_outcome(view, latest)
    return list(views.values())


def pending_approval(src: Sources, campaign_id: str, latest: RunInfo | None) -> dict | None:
    """The latest run's unanswered approval request: ``{run_id, wave, approvers, at}``."""
    if latest is None:
        return None
    asked = src.store.events(campaign_id, latest.run_id, actions=(Action.APPROVAL_REQUESTED,))
    if not asked:
        return None
    e = asked[-1]
    return {"run_id": e.run_id, "wave": e.wave, "approvers": e.detail.get("approvers") or [],
            "at": e.at.isoformat()}
