"""How consumers are cut into mapped task instances (skein.batches)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from skein.batches import MAX_INSTANCES, MIN_APPLY, MIN_WORK, batch_size, chunk, plan_batches


def fleet(count: int) -> list[SimpleNamespace]:
    """``count`` consumers; every 7th reads the one before it (a view and its reader)."""
    return [SimpleNamespace(id=f"c{i:05d}", upstream=[f"c{i - 1:05d}"] if i % 7 == 6 else [])
            for i in range(count)]


@pytest.mark.parametrize("count", [1, 2, 9, 10, 19, 20, 37, 79, 80, 81, 400, 1000, 10_000])
def test_work_batches_hold_every_consumer_once_in_few_full_instances(count):
    items = fleet(count)
    batches = plan_batches(items)
    assert sorted(c for b in batches for c in b) == [i.id for i in items]
    assert 1 <= len(batches) <= MAX_INSTANCES
    if count >= 2 * MIN_WORK:  # more than one instance only when each gets about MIN_WORK
        assert len(batches) > 1 and min(len(b) for b in batches) >= MIN_WORK - 1
    else:
        assert len(batches) == 1
    for item in items:  # a reader shares its upstream's batch
        for up in item.upstream:
            assert next(b for b in batches if item.id in b) == next(b for b in batches if up in b)


@pytest.mark.parametrize(("wave", "instances"), [(3, 1), (22, 1), (52, 1), (99, 1), (100, 2), (520, 8),
                                                 (9_000, 8)])
def test_a_small_wave_is_one_apply_instance(wave, instances):
    ids = [f"c{i}" for i in range(wave)]
    batches = chunk(ids, batch_size(wave, minimum=MIN_APPLY))
    assert len(batches) == instances and sum(batches, []) == ids


def test_the_campaign_batch_size_wins():
    assert batch_size(1000, configured=10) == 10 and batch_size(3, configured=10) == 10
    assert len(plan_batches(fleet(40), batch_size(40, configured=6))) > 5
