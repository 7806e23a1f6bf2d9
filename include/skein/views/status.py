"""Each consumer's status, as one SQL expression over the store, so lists filter, count and
page in the database (``LIMIT``/``OFFSET``) and never load a campaign's whole log.

A consumer's row in ``skein_consumers`` says what its latest plan was; its latest
state-changing audit event (``CONSUMER_STATES``) and a person's latest hold (``HOLDS``) say
what happened since (found through ``skein_consumer_latest``, the store's index of the log:
primary-key joins, no scan of the log). The first that applies wins:

============  ==============================================================
applied       its latest state event is ``applied``
applying      ``apply_started`` without ``applied`` (being written, or killed)
skipped       a person skipped it (not applied: left out of later waves)
escalated     a person escalated it, or an agent did (the plan says so)
failed        apply, monitoring or rollback failed, or the dry run refuted it
rolled_back   a rollback restored its previous content
pending       a patch waiting for its wave
verified      unchanged code the dry run verified (its upstream changes)
blocked       unchanged but not verifiable (its upstream is escalated)
============  ==============================================================

>>> from skein.store import CampaignStore
>>> store = CampaignStore("sqlite://")
>>> store.index_consumers("demo", "r1", [example_row("r/a.sql"), example_row("r/b.sql")])
>>> _ = store.record("demo", "r1", "task:apply", "applied", consumer="r/a.sql")
>>> with store.engine.connect() as conn:
...     sorted(conn.execute(sa.select(consumer_status("demo").c["consumer", "status"])).all())
[('r/a.sql', 'applied'), ('r/b.sql', 'pending')]
"""

from __future__ import annotations

import sqlalchemy as sa

from skein.audit import HOLDS, Action
from skein.statuses import NOT_MIGRATED, STATUSES, Status
from skein.store import audit, consumer_latest, consumers

ConsumerStatus = Status  # the one vocabulary (skein.statuses), kept under its old name here
__all__ = ["NOT_MIGRATED", "STATUSES", "ConsumerStatus", "consumer_status", "example_row"]


def consumer_status(campaign: str) -> sa.Subquery:
    """Every consumer of ``campaign`` with its plan, its latest state and hold, and ``status``.

    Columns: those of ``skein_consumers``, plus ``state``, ``state_run``, ``state_at``,
    ``hold``, ``hold_by``, ``hold_detail`` and ``status`` (a ``skein.statuses.Status``)."""
    latest = consumer_latest.alias("latest")
    state, hold = audit.alias("state"), audit.alias("hold")
    c = consumers.c
    # the newest decision is a skip or escalation (not a release): the consumer is held
    held = sa.case((hold.c.action.in_([a.value for a in HOLDS]), hold.c.action))
    status = sa.case(
        (state.c.action == Action.APPLIED.value, Status.APPLIED.value),
        (state.c.action == Action.APPLY_STARTED.value, Status.APPLYING.value),
        (hold.c.action == Action.CONSUMER_SKIPPED.value, Status.SKIPPED.value),
        (hold.c.action == Action.CONSUMER_ESCALATED.value, Status.ESCALATED.value),
        (state.c.action.in_([Action.APPLY_FAILED.value, Action.MONITOR_FAILED.value,
                             Action.ROLLBACK_FAILED.value]), Status.FAILED.value),
        (state.c.action == Action.ROLLED_BACK.value, Status.ROLLED_BACK.value),
        # as planned (skein.statuses.of_plan, in SQL)
        (c.plan_status == "patched", Status.PENDING.value),
        (sa.and_(c.plan_status == "unchanged",
                 sa.or_(c.simulation.is_(None), c.simulation == "pass")), Status.VERIFIED.value),
        (c.plan_status.in_([Status.ESCALATED.value, Status.FAILED.value]), c.plan_status),
        else_=Status.BLOCKED.value)  # unchanged but unverified, or a plan status of_plan does not name
    joined = (consumers
              .outerjoin(latest, sa.and_(latest.c.campaign == c.campaign, latest.c.consumer == c.consumer))
              .outerjoin(state, state.c.id == latest.c.state_id)
              .outerjoin(hold, hold.c.id == latest.c.hold_id))
    return (sa.select(consumers, state.c.action.label("state"), state.c.run_id.label("state_run"),
                      state.c.at.label("state_at"), held.label("hold"),
                      sa.case((held.is_not(None), hold.c.actor)).label("hold_by"),
                      sa.case((held.is_not(None), hold.c.detail)).label("hold_detail"),
                      status.label("status"))
            .select_from(joined).where(c.campaign == campaign).subquery("consumer_status"))


def example_row(consumer: str, **values) -> dict:
    """A ``skein_consumers`` row for examples and tests (a patched direct consumer)."""
    return {"consumer": consumer, "seq": 1, "owner": "team", "tier": None, "kind": "sql_file",
            "impact": "direct", "wave": "canary", "plan_status": "patched", "reason": None,
            "agent": "rule", "changes": 1, "simulation": "pass", "repo": None, "path": None,
            **values}
