"""Consumer code is untrusted: hostile consumers inside a real campaign.

A repository of consumers that read the source and try to read files, write files, attach
databases, load extensions, run forever or eat memory is added to the demo fleet. ``skein
plan`` must give each of them a status of its own with a reason that says what happened,
leave no file behind, and decide every other consumer exactly as on the fleet without them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import make_git_repo
from skein.pipeline import open_plan, plan_campaign
from skein.spec import load_campaign

pytestmark = pytest.mark.slow

HOSTILE = {
    "reads_passwd.sql": "SELECT p.user_id, c.* FROM analytics.plays AS p, read_csv('/etc/passwd') AS c\n",
    "reads_url.sql": "SELECT p.user_id FROM analytics.plays AS p, 'https://example.invalid/x.parquet' AS u\n",
    "copies_out.sql": "COPY (SELECT user_id FROM analytics.plays) TO '{leak}'\n",
    "attaches.sql": "ATTACH '{attach}' AS other;\nSELECT user_id FROM analytics.plays\n",
    "loads_extension.sql": "INSTALL httpfs;\nLOAD httpfs;\nSELECT user_id FROM analytics.plays\n",
    "runs_forever.sql": ("SELECT count(*) AS n FROM analytics.plays AS p, range(100000000000) AS a, "
                         "range(100000) AS b\n"),
    "eats_memory.sql": ("SELECT p.user_id, list(r.range) AS l FROM analytics.plays AS p, "
                        "range(200000000) AS r GROUP BY p.user_id\n"),
}


def plan_of(campaign: Path, out: Path) -> dict[str, dict]:
    plan_campaign(open_plan(load_campaign(campaign), out), workers=1)
    return {i["id"]: i for i in json.loads((out / "plan.json").read_text())["items"]}


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    from skein.demo.fleet import build_demo_fleet

    root = tmp_path_factory.mktemp("hostile")
    clean = root / "clean"
    build_demo_fleet(clean, consumers=40, seed=7)
    fleet = root / "fleet"
    shutil.copytree(clean, fleet, symlinks=True)
    leak, attach = root / "leak.csv", root / "other.duckdb"
    make_git_repo(fleet / "repos" / "hostile", {
        f"queries/{name}": text.format(leak=leak, attach=attach) for name, text in HOSTILE.items()})
    limits = {"timeout_s": 5, "memory_limit": "256MB"}
    for path in (clean, fleet):
        campaign = path / "campaigns" / "plays-v2.yaml"
        spec = yaml.safe_load(campaign.read_text())
        spec["simulation"] = {**spec.get("simulation", {}), **limits}
        campaign.write_text(yaml.safe_dump(spec, sort_keys=False))
    return {"clean": plan_of(clean / "campaigns" / "plays-v2.yaml", root / "plan-clean"),
            "hostile": plan_of(fleet / "campaigns" / "plays-v2.yaml", root / "plan-hostile"),
            "leak": leak, "attach": attach}


def test_each_hostile_consumer_gets_its_own_clear_status(plans):
    items = {cid.split("/")[-1]: i for cid, i in plans["hostile"].items() if cid.startswith("hostile/")}
    assert set(items) == set(HOSTILE), sorted(items)
    why = {name: (i["status"], i["reason"] or "") for name, i in items.items()}
    for name, (status, reason) in why.items():
        assert status in ("failed", "escalated"), (name, status, reason)  # never patched, never applied
    assert "Permission" in why["reads_passwd.sql"][1] or "disabled" in why["reads_passwd.sql"][1]
    assert "Permission" in why["reads_url.sql"][1] or "disabled" in why["reads_url.sql"][1]
    assert "COPY" in why["copies_out.sql"][1]
    assert "ATTACH" in why["attaches.sql"][1] and "INSTALL" in why["loads_extension.sql"][1]
    assert "time limit" in why["runs_forever.sql"][1]
    assert "Out of Memory" in why["eats_memory.sql"][1] or "time limit" in why["eats_memory.sql"][1]
    assert not plans["leak"].exists() and not plans["attach"].exists()


def test_the_rest_of_the_campaign_is_unaffected(plans):
    others = {cid: i for cid, i in plans["hostile"].items() if not cid.startswith("hostile/")}
    assert others.keys() == plans["clean"].keys()
    for cid, item in others.items():
        clean = plans["clean"][cid]
        assert (item["status"], item["simulation"]) == (clean["status"], clean["simulation"]), cid
