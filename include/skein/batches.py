"""How consumers are cut into units of work (one Airflow mapped task instance each).

Each task instance costs about a second of orchestration here (scheduling, a forked task
runner parsing its DAG, opening the run; ``bench/fleet.py``), while rewriting and simulating
one consumer takes ~0.1 s and applying one less: an instance per consumer would spend most of
a small campaign's time on orchestration (``bench/campaign.py``). So an instance holds at
least ``MIN_WORK`` consumers for the agents and the simulation, and at least ``MIN_APPLY``
for applying a wave (a git merge or a view replacement, serialized per repository and per
warehouse anyway: parallel instances buy little there). A large campaign gets at most
``MAX_INSTANCES`` per step, whatever its size: far below Airflow's ``max_map_length``
(1024), and enough to keep every worker slot of a small fleet busy. Each consumer stays
visible on its own: in the instance's name and log, and in the portal.

Consumers that depend on each other (a view and what reads it) stay in one batch: the
simulation of a downstream consumer needs its upstream's patched output.

>>> from types import SimpleNamespace as C
>>> items = [C(id="a", upstream=[]), C(id="b", upstream=["a"]), C(id="c", upstream=[])]
>>> plan_batches(items, size=1)
[['a', 'b'], ['c']]
>>> plan_batches(items)
[['a', 'b', 'c']]
"""

from __future__ import annotations

import math

MAX_INSTANCES = 8  # per mapped step
MIN_WORK = 10  # consumers per agents / simulate instance, at least
MIN_APPLY = 50  # consumers per apply instance, at least: a small wave is one instance


def batch_size(count: int, configured: int | None = None, minimum: int = MIN_WORK) -> int:
    """Consumers per instance for ``count`` consumers (``fleet.batch_size`` when configured):
    as many instances as hold ``minimum`` each, at most ``MAX_INSTANCES``, evenly filled.

    >>> batch_size(37), batch_size(1000), batch_size(10_000), batch_size(1000, configured=10)
    (13, 125, 1250, 10)
    >>> batch_size(22, minimum=MIN_APPLY), batch_size(52, minimum=MIN_APPLY), batch_size(520, minimum=MIN_APPLY)
    (22, 52, 65)
    """
    if configured:
        return configured
    instances = min(MAX_INSTANCES, max(1, count // minimum))
    return max(1, math.ceil(count / instances))


def components(items) -> list[list[str]]:
    """Groups of ids connected through ``upstream`` (in the order of ``items``)."""
    parent = {i.id: i.id for i in items}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for item in items:
        for up in item.upstream:
            if up in parent:
                parent[root(item.id)] = root(up)
    groups: dict[str, list[str]] = {}
    for item in items:
        groups.setdefault(root(item.id), []).append(item.id)
    return list(groups.values())


def plan_batches(items, size: int | None = None) -> list[list[str]]:
    """Whole components packed into ``ceil(len(items) / size)`` batches at most, filled
    evenly (a batch closes once the ids so far reach its share of the total; a component is
    never split, so a large one makes a larger batch), in the order of ``items``."""
    size = size or batch_size(len(items))
    total = len(items)
    wanted = max(1, math.ceil(total / size))
    batches: list[list[str]] = []
    current: list[str] = []
    placed = 0
    for group in components(items):
        current = current + group
        placed += len(group)
        if placed * wanted >= (len(batches) + 1) * total:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches


def chunk(ids: list[str], size: int) -> list[list[str]]:
    """``ids`` in consecutive slices of ``size`` (applying needs no grouping: waves already
    respect dependencies).

    >>> chunk(["a", "b", "c"], 2)
    [['a', 'b'], ['c']]
    """
    return [ids[i:i + size] for i in range(0, len(ids), size)]
