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
