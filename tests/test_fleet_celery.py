"""Scale-out on a real Airflow: CeleryExecutor, two Celery workers, one per queue.

api-server, scheduler and dag-processor as in ``test_campaign_e2e``, but with the metadata
database, the Celery result backend and the campaign store (``SKEIN_STORE_URL``) in a fresh
PostgreSQL database, and a Redis broker, plus two workers: one serving queue ``default``, one
serving ``skein-eu``. One repository of a demo fleet says ``skein/region: eu`` in its root
``catalog-info.yaml``; the campaign maps region ``eu`` to queue ``skein-eu``
(``fleet.queues``). The run must apply that repository's consumers through
``apply_<wave>__eu`` on the eu worker, and everything else on the default worker.

The Airflow settings are the distributed profile's (``skein_airflow.profiles``), on a database
and a Redis key prefix of the test's own (``tests/celery_env.py``), removed at the end; the two
workers here serve one queue each (the profile's both serve ``default`` too).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from celery_env import Worker, distributed_airflow, executed, log_text, tail
from conftest import GIT_ENV

psycopg2 = pytest.importorskip("psycopg2")
redis = pytest.importorskip("redis")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SKEIN = ROOT / ".venv" / "bin" / "skein"
USERS = {"admin": "admin", "alice": "user"}
CAMPAIGN, DAG = "plays-v2-eu", "skein__plays-v2-eu"
EU_REPO = "finance-reporting"
WORKERS = (Worker("worker-default", "default", "default", 2), Worker("worker-eu", "eu", "skein-eu", 1))


def make_fleet(tmp: Path, campaigns: Path) -> Path:
    """A 40-consumer demo fleet whose finance-reporting repository is in region eu (root
    catalog-info.yaml, committed; its treasury/ folder keeps its own catalog file, no region)."""
    fleet = tmp / "fleet"
    subprocess.run([str(SKEIN), "demo-fleet", "--out", str(fleet), "--consumers", "40"],
                   check=True, capture_output=True)
    repo = fleet / "repos" / EU_REPO
    catalog = yaml.safe_load((repo / "catalog-info.yaml").read_text())
    catalog["metadata"]["annotations"]["skein/region"] = "eu"
    (repo / "catalog-info.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    git_env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-am", "Region eu"], check=True, env=git_env)

    spec = yaml.safe_load((fleet / "campaigns" / "plays-v2.yaml").read_text())
    spec["campaign"] = CAMPAIGN
    spec["warehouse"] = f"duckdb:///{fleet / 'warehouse.duckdb'}"
    spec["consumers"] = [{"repo": str(fleet / "repos" / "*"), "dialect": "duckdb"},
                         {"warehouse_views": True}]
    spec["rollout"].update({"schedule": None, "approvers": ["alice"]})
    spec["fleet"] = {"queues": {"eu": "skein-eu"}, "batch_size": 15, "retries": 1, "retry_delay_s": 1}
    (campaigns / f"{CAMPAIGN}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return fleet


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("celery")
    campaigns = tmp / "campaigns"
    campaigns.mkdir()
    fleet = make_fleet(tmp, campaigns)
    with distributed_airflow(tmp, campaigns, USERS, workers=WORKERS) as (env, _):
        yield env, fleet, env.env["SKEIN_STORE_URL"]


def test_region_queue_routes_apply_to_its_worker(world):
    env, fleet, store_url = world
    env.wait_for_dag(DAG)
    run = env.trigger(DAG)
    env.wait_for_approval(DAG, run, "approval")
    env.decide(DAG, run, "approval", "Approve all", user="alice")
    state = env.wait_for_run(DAG, run, timeout=420)
    assert state == "success", (env.task_states(DAG, run),
                                tail(env, "worker-default"), tail(env, "worker-eu"))

    tis = env.get(f"/api/v2/dags/{DAG}/dagRuns/{run}/taskInstances?limit=1000")["task_instances"]
    applies = [ti for ti in tis if ti["task_id"].startswith("apply_")]
    eu = [ti for ti in applies if ti["task_id"].endswith("__eu")]
    default = [ti for ti in applies if ti["task_id"].endswith("__default")]
    assert {ti["task_id"] for ti in eu} == {"apply_canary__eu", "apply_everyone__eu"}
    assert {ti["task_id"] for ti in default} == {"apply_canary__default", "apply_everyone__default"}
    assert len(eu) + len(default) == len(applies)
    assert {ti["queue"] for ti in eu} == {"skein-eu"}
    assert {ti["queue"] for ti in default} == {"default"}
    eu_ran = {(ti["task_id"], ti["map_index"]) for ti in eu if ti["state"] == "success"}
    default_ran = {(ti["task_id"], ti["map_index"]) for ti in default if ti["state"] == "success"}
    assert eu_ran and default_ran, [(ti["task_id"], ti["map_index"], ti["state"]) for ti in applies]
    assert all(ti["queue"] == "default" for ti in tis if ti not in eu)
    # Each Celery worker preloaded the engine for its pool (skein_airflow.preload); the
    # scheduler, which forks no task runners under Celery, did not.
    for worker in WORKERS:
        assert "skein: preloaded for the task runners" in log_text(env, worker.name)
    scheduler = log_text(env, "scheduler")
    assert scheduler and "skein: preloaded" not in scheduler

    # The audit log (PostgreSQL): finance-reporting's root-catalog consumers were applied by the
    # eu group; treasury/ (its own catalog file, no region) and every other repo by default.
    from skein.pipeline import run_directory
    from skein.store import CampaignStore

    plan = json.loads((run_directory(CAMPAIGN, run, env.home / "skein") / "plan.json").read_text())
    patched = {i["id"] for i in plan["items"] if i["status"] == "patched"}
    in_eu = {c for c in patched if c.startswith(f"{EU_REPO}/") and not c.startswith(f"{EU_REPO}/treasury/")}
    assert in_eu and f"{EU_REPO}/treasury/last_play_0024.sql" in patched
    store = CampaignStore(store_url)
    try:
        events = store.events(CAMPAIGN, run)
    finally:
        store.dispose()
    applied = {e.consumer: e.actor for e in events if e.action == "applied"}
    assert set(applied) == patched
    groups = {c: re.fullmatch(r"task:apply_\w+?__(\w+)\[\d+\]", actor).group(1)
              for c, actor in applied.items()}
    assert {c for c, g in groups.items() if g == "eu"} == in_eu, groups
    assert {g for c, g in groups.items() if c not in in_eu} == {"default"}
    for cid in in_eu:
        repo, path = fleet / "repos" / cid.split("/")[0], cid.split("/", 1)[1]
        log = subprocess.run(["git", "-C", str(repo), "log", "--merges", "--first-parent", "--format=%s",
                              "--", path], capture_output=True, text=True, check=True).stdout.splitlines()
        assert len(log) == 1 and log[0].startswith(f"Merge skein/{CAMPAIGN}: "), log

    # The eu worker ran the eu apply instances and nothing else; the default worker none of them.
    on_eu, on_default = executed(env, "worker-eu"), executed(env, "worker-default")
    assert eu_ran <= on_eu, (on_eu, tail(env, "worker-eu"))
    assert {t for t, _ in on_eu} <= {"apply_canary__eu", "apply_everyone__eu"}, on_eu
    # (batches_<wave>__eu, which only reads the store, runs on the default queue.)
    assert not {t for t, _ in on_default if t.startswith("apply_") and t.endswith("__eu")}, on_default
    assert default_ran <= on_default and ("discover", -1) in on_default
