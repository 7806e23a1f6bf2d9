"""The distributed profile under failure, on the local PostgreSQL and Redis (tests/celery_env.py:
each test has databases, a Redis key prefix and folders of its own, removed afterwards).

1. A Celery worker is killed with SIGKILL (it and every process under it, as when its machine
   dies) while it applies a wave, stopped right after writing a consumer and before recording
   it. Its message stays unacknowledged in Redis (late acknowledgement); the scheduler fails
   the silent try and the retry runs on the other worker; the campaign completes, and the
   audit log and git history show every consumer applied exactly once.
2. The scheduler is killed and started again while a wave is being applied by the workers:
   the run resumes and finishes, nothing applied twice.
3. Pools as quotas: two campaigns run at once, each in its own pool; from the task instances'
   start and end times (REST API), no pool ever ran more task instances than its slots, and
   each pool was full at some point.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from celery_env import (WORKERS, demo_campaign, distributed_airflow, executed, kill_tree,
                        merges_touching, owner, running, store_events, tail, task_instances, tries)

pytest.importorskip("psycopg2")
pytest.importorskip("redis")
pytestmark = pytest.mark.slow

USERS = {"admin": "admin", "alice": "user"}
# A killed worker's running task is failed this long after its last heartbeat (then retried).
FAST_FAILOVER = {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                 "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5"}


def applied_exactly_once(store_url: str, campaign_id: str, run_id: str, fleet: Path, run_dir: Path) -> Counter:
    plan = json.loads((run_dir / "plan.json").read_text())
    patched = {i["id"] for i in plan["items"] if i["status"] == "patched"}
    events = store_events(store_url, campaign_id, run_id)
    applied = Counter(e.consumer for e in events if e.action == "applied")
    assert applied == Counter({cid: 1 for cid in patched}), applied
    for cid in patched:
        if not cid.startswith("warehouse/"):
            assert merges_touching(fleet, cid) == 1, cid
    return applied


def run_dir(env, campaign_id: str, run_id: str) -> Path:
    from skein.pipeline import run_directory

    return run_directory(campaign_id, run_id, env.home / "skein")


def approve(env, dag: str, run: str) -> None:
    env.wait_for_approval(dag, run, "approval")
    env.decide(dag, run, "approval", "Approve all", user="alice")


def wait_for_file(path: Path, env, dag: str, run: str, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        if env.run_state(dag, run) in ("success", "failed"):
            raise AssertionError(f"run ended, nothing paused: {env.task_states(dag, run)}")
        time.sleep(0.5)
    raise TimeoutError(f"no pause after {timeout} s: {env.task_states(dag, run)}")


def unacked(found, ti_id: str) -> list[dict]:
    """Messages in Redis that a worker took and never acknowledged, whose workload is the task
    instance ``ti_id`` (kombu keeps them in the hash ``unacked``, body base64 encoded)."""
    import base64

    import redis

    client = redis.Redis.from_url(found.redis)
    try:
        values = client.hvals(f"{found.key_prefix}unacked")
    finally:
        client.close()
    out = []
    for value in values:
        message = json.loads(value)[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        if ti_id in body:
            out.append(message)
    return out


def test_worker_killed_mid_wave_its_task_runs_on_the_other_worker(tmp_path):
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    cid, dag = "failover", "skein__failover"
    fleet = demo_campaign(tmp_path, campaigns, cid, 24, {"batch_size": 6, "retries": 2, "retry_delay_s": 1},
                          ["alice"])
    marker = tmp_path / "paused"
    # The first task to write its second consumer stops right there: written, not recorded.
    pause = {"SKEIN_PAUSE_AT": "apply:after_write:2", "SKEIN_PAUSE_MARKER": str(marker), "SKEIN_PAUSE_S": "600"}
    with distributed_airflow(tmp_path, campaigns, USERS, {**FAST_FAILOVER, **pause}) as (env, found):
        env.wait_for_dag(dag)
        run = env.trigger(dag)
        approve(env, dag, run)
        pid = int(wait_for_file(marker, env, dag, run).split()[0])
        victim = owner(env, pid)
        assert victim in {w.name for w in WORKERS}, (pid, victim)
        survivor = next(w.name for w in WORKERS if w.name != victim)
        paused = next(ti for ti in task_instances(env, dag, run) if ti["pid"] == pid)
        key = (paused["task_id"], paused["map_index"])
        assert paused["task_id"].startswith("apply_") and paused["state"] == "running", paused
        before = [e for e in store_events(env.env["SKEIN_STORE_URL"], cid, run) if e.action == "applied"]

        killed = kill_tree(env, victim)
        assert pid in killed and not [p for p in killed if running(p)]  # the task runner too
        # Late acknowledgement: the dead worker never acknowledged the message of its task.
        assert unacked(found, paused["id"]), "the killed task's message was acknowledged"

        state = env.wait_for_run(dag, run, timeout=420)
        assert state == "success", (env.task_states(dag, run), tail(env, survivor))

        # The paused instance failed its try on the dead worker and succeeded on the other one.
        attempts = sorted((t for t in tries(env, dag, run) if (t["task_id"], t["map_index"]) == key),
                          key=lambda t: t["try_number"])
        dead = next(t for t in attempts if t["pid"] == pid)
        assert dead["state"] == "failed" and attempts[-1]["state"] == "success", attempts
        assert attempts[-1]["try_number"] > dead["try_number"] and attempts[-1]["pid"] != pid
        assert key in executed(env, survivor), tail(env, survivor)

        applied = applied_exactly_once(env.env["SKEIN_STORE_URL"], cid, run, fleet, run_dir(env, cid, run))
        after = store_events(env.env["SKEIN_STORE_URL"], cid, run)
        assert len(applied) > len(before)
        # The consumer written but not recorded when the worker died: recorded by the retry, once.
        recovered = [e for e in after if e.action == "applied" and "interrupted attempt" in
                     (e.detail.get("message") or "")]
        assert len(recovered) == 1 and recovered[0].actor.startswith(f"task:{paused['task_id']}"), recovered


def test_scheduler_killed_and_restarted_mid_wave(tmp_path):
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    cid, dag = "restart", "skein__restart"
    fleet = demo_campaign(tmp_path, campaigns, cid, 24, {"batch_size": 6, "retries": 2, "retry_delay_s": 1},
                          ["alice"])
    marker = tmp_path / "paused"
    # One apply task holds still for a while, so the scheduler dies while a wave is under way.
    pause = {"SKEIN_PAUSE_AT": "apply:after_write:2", "SKEIN_PAUSE_MARKER": str(marker), "SKEIN_PAUSE_S": "25"}
    with distributed_airflow(tmp_path, campaigns, USERS, {**FAST_FAILOVER, **pause}) as (env, found):
        env.wait_for_dag(dag)
        run = env.trigger(dag)
        approve(env, dag, run)
        pid = int(wait_for_file(marker, env, dag, run).split()[0])
        assert owner(env, pid) in {w.name for w in WORKERS}
        kill_tree(env, "scheduler")
        killed_at = datetime.now().astimezone()
        store_url = env.env["SKEIN_STORE_URL"]
        applied_at_kill = sum(e.action == "applied" for e in store_events(store_url, cid, run))
        time.sleep(5)
        env.spawn("scheduler")
        state = env.wait_for_run(dag, run, timeout=420)
        assert state == "success", env.task_states(dag, run)
        applied = applied_exactly_once(store_url, cid, run, fleet, run_dir(env, cid, run))
        assert sum(applied.values()) > applied_at_kill  # the wave was not over at the kill
        # The instance that was paused across the restart finished on its first try.
        paused = [t for t in tries(env, dag, run) if t["pid"] == pid]
        assert [t["state"] for t in paused] == ["success"] and paused[0]["try_number"] == 1, paused
        later = [ti for ti in task_instances(env, dag, run)
                 if ti["start_date"] and datetime.fromisoformat(ti["start_date"]) > killed_at]
        assert later, "nothing ran after the restart"


def overlaps(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end before a start at the same instant)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    most = current = 0
    for _, step in points:
        current += step
        most = max(most, current)
    return most


def test_pools_are_quotas_for_two_campaigns_at_once(tmp_path):
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    slots = {"skein_quota-a": 2, "skein_quota-b": 1}
    for name in ("a", "b"):
        demo_campaign(tmp_path, campaigns, f"quota-{name}", 8,
                      {"pool": f"skein_quota-{name}", "batch_size": 2, "retries": 1, "retry_delay_s": 1}, ["alice"])
    with distributed_airflow(tmp_path, campaigns, USERS) as (env, _):
        for pool, count in slots.items():
            env.post("/api/v2/pools", {"name": pool, "slots": count, "include_deferred": False})
        runs = {}
        for name in ("a", "b"):
            env.wait_for_dag(f"skein__quota-{name}")
        for name in ("a", "b"):
            runs[f"skein__quota-{name}"] = env.trigger(f"skein__quota-{name}", {"dry_run": True})
        for dag, run in runs.items():
            assert env.wait_for_run(dag, run, timeout=420) == "success", env.task_states(dag, run)

        by_pool: dict[str, list[tuple[datetime, datetime]]] = {}
        spans = {}
        for dag, run in runs.items():
            for ti in tries(env, dag, run):
                if ti["start_date"] and ti["end_date"]:
                    span = (datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"]))
                    by_pool.setdefault(ti["pool"], []).append(span)
                    spans.setdefault(dag, []).append(span)
        for pool, count in slots.items():
            assert overlaps(by_pool[pool]) == count, (pool, sorted(by_pool[pool]))  # full, never over
        assert set(by_pool) <= {*slots, "skein_default"}
        # The two campaigns did run at the same time.
        (a0, a1), (b0, b1) = ((min(s for s, _ in v), max(e for _, e in v)) for v in spans.values())
        assert a0 < b1 and b0 < a1
