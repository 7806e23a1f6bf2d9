"""Never half-applied: ``skein run`` killed at every crash point of a write (``skein.faults``),
then run again with the same run id.

After the crash each consumer the plan patches is either untouched or fully applied (git: the
merge is on the default branch or not at all; views: the old DDL or the new one); the next run
finishes the campaign, and every consumer ends applied exactly once: one merge, one ``applied``
event, the planned bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from skein.store import CampaignStore
from test_campaign_run import copy_fleet, file_path, fleet_of, fleet_template, merges_touching  # noqa: F401

pytestmark = pytest.mark.slow

SKEIN = Path(sys.executable).with_name("skein")
CAMPAIGN_ID = "plays-v2"


def run(campaign: Path, home: Path, consumers: str, crash_at: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SKEIN_HOME": str(home)}
    env.pop("SKEIN_STORE_URL", None)
    env.pop("SKEIN_CRASH_AT", None)
    if crash_at:
        env["SKEIN_CRASH_AT"] = crash_at
    return subprocess.run([str(SKEIN), "run", str(campaign), "--run-id", "crash", "--no-soak",
                           "--approve", "all", "--json", "--consumers", consumers],
                          capture_output=True, text=True, env=env, timeout=900)


def view_ddl(fleet: Path, consumer: str) -> bytes:
    schema, _, view = consumer.split("/", 1)[1].partition(".")
    with duckdb.connect(str(fleet / "warehouse.duckdb"), read_only=True) as con:
        return con.execute("SELECT sql FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
                           [schema, view]).fetchone()[0].encode()


def content(fleet: Path, consumer: str) -> bytes:
    if consumer.startswith("warehouse/"):
        return view_ddl(fleet, consumer)
    repo, _, path = consumer.partition("/")
    return subprocess.run(["git", "-C", str(fleet / "repos" / repo), "show", f"HEAD:{path}"],
                          capture_output=True, check=True).stdout


@pytest.mark.parametrize("crash_at,consumers", [
    ("git:after_commit:2", "legacy-scripts/*"),  # committed on the campaign branch, not merged
    ("git:after_merge:2", "legacy-scripts/*"),  # merged, the audit row not written
    ("apply:after_write:2", "legacy-scripts/*"),  # the same, seen from the pipeline
    ("view:in_transaction", "warehouse/*"),  # CREATE OR REPLACE VIEW ran, no COMMIT
], ids=lambda v: v.replace("/", "_").replace("*", "all"))
def test_a_killed_write_leaves_each_consumer_untouched_or_applied(fleet_template, tmp_path,
                                                                    crash_at, consumers):
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet, home = fleet_of(campaign), tmp_path / "home"
    home.mkdir()
    run_dir = home / "runs" / CAMPAIGN_ID / "crash"

    crashed = run(campaign, home, consumers, crash_at)
    assert crashed.returncode == 137, (crashed.returncode, crashed.stderr[-2000:])
    plan = json.loads((run_dir / "plan.json").read_text())
    patched = [i["id"] for i in plan["items"] if i["status"] == "patched"]
    planned = {cid: (run_dir / "patched" / cid.replace("/", "__")).read_bytes() for cid in patched}
    original = {cid: json.loads((run_dir / "agents" / (cid.replace("/", "__") + ".json")).read_text())
                ["original"].encode() for cid in patched}
    assert planned
    halfway = {cid: content(fleet, cid) for cid in planned}
    for cid, now in halfway.items():
        if cid.startswith("warehouse/"):  # the first view write died before COMMIT
            assert now == view_ddl(fleet_template, cid), f"{cid} changed without a COMMIT"
        else:
            assert now in (original[cid], planned[cid]), f"{cid} is half applied"
    if not consumers.startswith("warehouse"):
        assert any(now == original[cid] for cid, now in halfway.items())  # it did stop half way
    for repo in (fleet / "repos").iterdir():
        assert not (repo / ".git" / "MERGE_HEAD").exists() or crash_at == "git:after_merge:2"

    again = run(campaign, home, consumers, None)
    assert again.returncode in (0, 3), again.stderr[-3000:]
    assert json.loads(again.stdout)["status"] == "finished"
    events = CampaignStore(f"sqlite:///{home / 'store.db'}").events(CAMPAIGN_ID, "crash")
    applied = Counter(e.consumer for e in events if e.action == "applied")
    assert applied == Counter({cid: 1 for cid in planned}), applied
    for cid, new in planned.items():
        if cid.startswith("warehouse/"):
            assert content(fleet, cid) != view_ddl(fleet_template, cid)
            assert b"analytics_v2" in content(fleet, cid)
        else:
            assert content(fleet, cid) == new and file_path(fleet, cid).read_bytes() == new
            assert merges_touching(fleet, cid) == 1, cid
