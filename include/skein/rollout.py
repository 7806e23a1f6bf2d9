"""Which wave each consumer is applied in: canary first, in migration order.

Waves come from the campaign (``rollout.waves``: cumulative shares, the last 1.0). The
consumers to apply are taken in the plan's topological order, so a consumer never lands
in an earlier wave than what it reads; within that order the least critical tiers go
first (a higher ``tier`` number is less critical; none counts as least).

>>> from types import SimpleNamespace as C
>>> from skein.spec import Wave
>>> items = [C(id="a", order=1, tier=1, upstream=[]), C(id="b", order=2, tier=3, upstream=[]),
...          C(id="c", order=3, tier=None, upstream=["a"])]
>>> assign_waves(items, [Wave(name="canary", share=0.3), Wave(name="everyone", share=1.0)])
{'b': 'canary', 'a': 'everyone', 'c': 'everyone'}
"""

from __future__ import annotations

import heapq
import math


def assign_waves(items, waves) -> dict[str, str]:
    """``items``: impacted consumers (``id``, ``order``, ``tier``, ``upstream``) to apply."""
    ids = {i.id for i in items}
    waiting = {i.id: {u for u in i.upstream if u in ids} for i in items}
    dependents: dict[str, list[str]] = {}
    for item in items:
        for up in waiting[item.id]:
            dependents.setdefault(up, []).append(item.id)
    by_id = {i.id: i for i in items}

    def priority(item):  # least critical first, then migration order
        tier = item.tier if item.tier is not None else math.inf
        return (-tier, item.order, item.id)

    ready = [priority(i) + (i.id,) for i in items if not waiting[i.id]]
    heapq.heapify(ready)
    sequence = []
    while ready:
        *_, cid = heapq.heappop(ready)
        sequence.append(cid)
        for nxt in dependents.get(cid, []):
            waiting[nxt].discard(cid)
            if not waiting[nxt]:
                heapq.heappush(ready, priority(by_id[nxt]) + (nxt,))
    out: dict[str, str] = {}
    start = 0
    for wave in waves:
        end = min(len(sequence), max(start + 1 if start < len(sequence) else start,
                                     math.ceil(wave.share * len(sequence))))
        for cid in sequence[start:end]:
            out[cid] = wave.name
        start = end
    return out


def apply_groups(fleet) -> list[str]:
    """The apply task groups a campaign's fleet settings call for: one per region with a queue
    (plus ``default``), times one per tier with a priority (plus ``other``). Each group is one
    mapped Airflow task, because queue and priority are fixed per mapped task.

    >>> from skein.spec import Fleet
    >>> apply_groups(Fleet()), apply_groups(Fleet(queues={"eu": "q-eu"}, tier_priority={1: 10}))
    (['default'], ['eu__tier1', 'eu__other', 'default__tier1', 'default__other'])
    """
    regions = [*fleet.queues, "default"]
    tiers = [f"tier{t}" for t in fleet.tier_priority] + ["other"] if fleet.tier_priority else [None]
    return [f"{r}__{t}" if t else r for r in regions for t in tiers]


def group_of(region: str | None, tier: int | None, fleet) -> str:
    """The apply group of a consumer (see ``apply_groups``).

    >>> from skein.spec import Fleet
    >>> f = Fleet(queues={"eu": "q-eu"}, tier_priority={1: 10})
    >>> group_of("eu", 1, f), group_of("us", 3, f), group_of(None, None, Fleet())
    ('eu__tier1', 'default__other', 'default')
    """
    name = region if region in fleet.queues else "default"
    if fleet.tier_priority:
        name += f"__tier{tier}" if tier in fleet.tier_priority else "__other"
    return name


def group_settings(group: str, fleet) -> tuple[str | None, int]:
    """(Celery queue or None for the default, priority_weight) of an apply group.

    >>> from skein.spec import Fleet
    >>> group_settings("eu__tier1", Fleet(queues={"eu": "q-eu"}, tier_priority={1: 10}))
    ('q-eu', 10)
    """
    region, _, tier = group.partition("__")
    weight = fleet.tier_priority.get(int(tier[4:]), 1) if tier.startswith("tier") else 1
    return fleet.queues.get(region), weight


def wave_threshold(campaign, wave: str, override: float | None = None) -> float:
    """The error rate above which ``wave`` rolls back: the run's override (a trigger param,
    ``--error-threshold``), else the wave's own setting, else the campaign's.

    >>> from types import SimpleNamespace as S
    >>> c = S(rollout=S(error_threshold=0.05, waves=[S(name="canary", error_threshold=0.0),
    ...                                              S(name="everyone", error_threshold=None)]))
    >>> wave_threshold(c, "canary"), wave_threshold(c, "everyone"), wave_threshold(c, "canary", 0.5)
    (0.0, 0.05, 0.5)
    """
    if override is not None:
        return override
    setting = next(w.error_threshold for w in campaign.rollout.waves if w.name == wave)
    return setting if setting is not None else campaign.rollout.error_threshold
