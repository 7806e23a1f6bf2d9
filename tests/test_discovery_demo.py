"""Discovery against the demo fleet's ground truth (docs/discovery.md is the contract).

The ground truth comes from the templates' hand-written declarations (skein.demo), never
from parsing the SQL, so a match here is two independent readings of the doc agreeing.
"""

from __future__ import annotations

import json

import pytest

from skein.demo import build_demo_fleet, plan_fleet
from skein.discovery import discover
from skein.spec import load_campaign

FIELDS = ("kind", "impact", "level", "status", "columns", "produces", "owner", "tier", "dialect")


@pytest.fixture(scope="module", params=[40, 400], ids=lambda n: f"n{n}")
def fleet(request, tmp_path_factory):
    """A built fleet, its ground truth (with the plan) and the discovery report."""
    out = tmp_path_factory.mktemp(f"fleet{request.param}")
    campaign = build_demo_fleet(out, consumers=request.param, seed=7)
    truth = json.loads((out / "ground_truth.json").read_text())
    truth["plan"] = plan_fleet(request.param, seed=7)
    return truth, discover(load_campaign(campaign))


def test_same_impacted_consumers(fleet):
    """Discovery lists exactly the impacted consumers."""
    truth, report = fleet
    got = {c.id for c in report.consumers}
    want = set(truth["consumers"])
    assert sorted(got - want) == [] and sorted(want - got) == []


def test_same_facts_per_consumer(fleet):
    """Per consumer: kind, impact, level, status, columns, produces, owner, tier, dialect."""
    truth, report = fleet
    diffs = {}
    for item in report.consumers:
        want = truth["consumers"].get(item.id)
        if want is None:
            continue
        got = {f: getattr(item, f) for f in FIELDS}
        bad = {f: (want[f], got[f]) for f in FIELDS if want[f] != got[f]}
        if bad:
            diffs[item.id] = bad
    assert diffs == {}  # id -> {field: (expected, discovered)}


def test_unparseable_and_not_listed(fleet):
    """Unparseable consumers not listed (they name nothing impacted) are reported apart."""
    truth, report = fleet
    assert sorted(report.unparseable) == sorted(set(truth["unparseable"]) - set(truth["consumers"]))


def test_listing_is_in_topological_order(fleet):
    """Sorted by ``order``; a producer comes before every consumer of what it produces."""
    truth, report = fleet
    orders = [c.order for c in report.consumers]
    assert orders == sorted(orders)
    order_of_product = {c.produces: c.order for c in report.consumers if c.produces}
    order_of = {c.id: c.order for c in report.consumers}
    checked = 0
    for spec in truth["plan"]:
        for dataset in spec.reads:
            if spec.id in order_of and dataset in order_of_product:
                assert order_of_product[dataset] < order_of[spec.id], spec.id
                checked += 1
    assert checked
