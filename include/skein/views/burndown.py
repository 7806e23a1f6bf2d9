"""The burndown: how many consumers still read the old dataset, over time, from the audit log.

Consumers that read the source directly (``impact = direct``) are counted; each first
``applied`` takes one off, a ``rolled_back`` puts it back. Only those two actions of those
consumers are read (an indexed join), and the series is thinned to ``max_points``.

>>> from skein.store import CampaignStore
>>> from skein.views.status import example_row
>>> store = CampaignStore("sqlite://")
>>> store.index_consumers("demo", "r1", [example_row("r/a.sql"), example_row("r/b.sql")])
>>> _ = store.record("demo", "r1", "task:apply", "applied", consumer="r/a.sql")
>>> series = burndown(store, "demo")
>>> series.total, [p.remaining for p in series.points]
(2, [2, 1])
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel

from skein.audit import Action
from skein.store import CampaignStore, audit, consumers


class BurndownPoint(BaseModel):
    at: datetime
    remaining: int


class Burndown(BaseModel):
    total: int  # consumers reading the old dataset when the campaign was planned
    remaining: int  # now
    points: list[BurndownPoint]
    listed: int = 0  # every consumer of the campaign (the consumer list's total)
    applied: int = 0  # of ``total``, migrated now

    @property
    def explained(self) -> str:
        """Why the chart counts fewer consumers than the list shows.

        >>> Burndown(total=27, remaining=27, points=[], listed=37).explained
        '27 of the 37 consumers read the source directly; the 10 others read it through them (views, models) and stop reading it when those are migrated.'
        """
        others = self.listed - self.total
        return (f"{self.total} of the {self.listed} consumers read the source directly"
                + (f"; the {others} others read it through them (views, models) and stop reading "
                   "it when those are migrated." if others > 0 else "."))


def burndown(store: CampaignStore, campaign_id: str, max_points: int = 200) -> Burndown:
    """The series of ``campaign_id``: a point at its first plan, then one per change."""
    direct = sa.and_(consumers.c.campaign == campaign_id, consumers.c.impact == "direct")

    def changes(action: Action):  # one part per action: each reads ix_skein_audit_action
        return (sa.select(audit.c.id, audit.c.at, audit.c.action, audit.c.consumer)
                .join(consumers, sa.and_(consumers.c.campaign == audit.c.campaign,
                                         consumers.c.consumer == audit.c.consumer))
                .where(audit.c.campaign == campaign_id, audit.c.action == action.value, direct))

    planned = (sa.select(sa.func.min(audit.c.at))
               .where(audit.c.campaign == campaign_id, audit.c.action == Action.PLANNED.value))
    with store.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(consumers).where(direct)).scalar_one()
        listed = conn.execute(sa.select(sa.func.count()).select_from(consumers)
                              .where(consumers.c.campaign == campaign_id)).scalar_one()
        start = conn.execute(planned).scalar()
        rows = sorted(conn.execute(sa.union_all(changes(Action.APPLIED), changes(Action.ROLLED_BACK))).all())
    migrated: set[str] = set()
    series = [(start or rows[0].at, total)] if start is not None or rows else []
    for _, at, action, consumer in rows:
        if action == Action.APPLIED and consumer not in migrated:
            migrated.add(consumer)
        elif action == Action.ROLLED_BACK and consumer in migrated:
            migrated.discard(consumer)
        else:
            continue
        series.append((at, total - len(migrated)))
    points = [BurndownPoint(at=at, remaining=n) for at, n in thin(series, max_points)]
    return Burndown(total=total, remaining=total - len(migrated), points=points, listed=listed,
                    applied=len(migrated))


def thin(points: list, max_points: int) -> list:
    """At most ``max_points`` of ``points``, evenly spread, the first and the last kept.

    >>> thin(list(range(10)), 4)
    [0, 3, 6, 9]
    """
    if len(points) <= max_points or max_points < 2:
        return points
    step = (len(points) - 1) / (max_points - 1)
    return [points[round(i * step)] for i in range(max_points)]
