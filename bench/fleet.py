"""The distributed profile's throughput and overhead, on the local PostgreSQL and Redis.

Prints JSON:

- ``campaign``: consumers migrated per minute by a whole campaign run (discover to finalize,
  approved at once; the minutes the approval waited for its answer left out), with one Celery
  worker and then with two (both ``--concurrency 2``; the second is started between the runs,
  each run on a fresh demo fleet of ``--consumers``).
- ``overhead``: per-task orchestration cost, CeleryExecutor against LocalExecutor, both on
  PostgreSQL and both with 4 task slots: a DAG of ``--tasks`` mapped no-op instances; seconds of
  wall clock per instance, and the median queued-to-started latency of an instance.

Each setup has databases and a Redis key prefix of its own (tests/celery_env.py), removed at
the end. About 10 minutes on 2 cores.

    python bench/fleet.py [--consumers 40] [--tasks 40]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "include"), str(ROOT / "plugins")]

from airflow_env import AirflowEnv  # noqa: E402
from celery_env import (WORKERS, celery_env, demo_campaign, servers, start_workers,  # noqa: E402
                        store_events, task_instances)

USERS = {"admin": "admin", "alice": "user"}
NOOP_DAG = '''
import pendulum
from airflow.sdk import DAG, task

with DAG("bench_noop", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         catchup=False, max_active_tasks=64):
    @task
    def noop(i):
        return i

    noop.expand(i=list(range({tasks})))
'''


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def dags_folder(tmp: Path, tasks: int) -> Path:
    """Skein's DAG files and the no-op DAG."""
    folder = tmp / "dags"
    folder.mkdir()
    for path in (ROOT / "dags").glob("*.py"):
        shutil.copy(path, folder / path.name)
    (folder / "bench_noop.py").write_text(NOOP_DAG.replace("{tasks}", str(tasks)))
    return folder


def campaign_rate(env: AirflowEnv, campaign_id: str) -> dict:
    dag = f"skein__{campaign_id}"
    env.wait_for_dag(dag)
    run = env.trigger(dag)
    env.wait_for_approval(dag, run, "approval")
    env.decide(dag, run, "approval", "Approve all", user="alice")
    assert env.wait_for_run(dag, run, timeout=1200) == "success", env.task_states(dag, run)
    info = env.get(f"/api/v2/dags/{dag}/dagRuns/{run}")
    tis = task_instances(env, dag, run)
    approval = next(ti for ti in tis if ti["task_id"] == "approval")
    waited = (when(approval["end_date"]) - when(approval["start_date"])).total_seconds()
    total = (when(info["end_date"]) - when(info["start_date"])).total_seconds()
    applied = sum(e.action == "applied" for e in store_events(env.env["SKEIN_STORE_URL"], campaign_id, run))
    return {"applied": applied, "task_instances": len(tis), "run_s": round(total, 1),
            "approval_wait_s": round(waited, 1),
            "consumers_per_minute": round(60 * applied / (total - waited), 2)}


def noop_overhead(env: AirflowEnv, tasks: int) -> dict:
    env.wait_for_dag("bench_noop")
    run = env.trigger("bench_noop")
    assert env.wait_for_run("bench_noop", run, timeout=1200) == "success"
    info = env.get(f"/api/v2/dags/bench_noop/dagRuns/{run}")
    tis = [ti for ti in task_instances(env, "bench_noop", run) if ti["state"] == "success"]
    assert len(tis) == tasks
    total = (when(info["end_date"]) - when(info["start_date"])).total_seconds()
    latency = [(when(ti["start_date"]) - when(ti["queued_when"])).total_seconds() for ti in tis]
    running = [(when(ti["end_date"]) - when(ti["start_date"])).total_seconds() for ti in tis]
    return {"task_instances": tasks, "run_s": round(total, 1), "s_per_task": round(total / tasks, 3),
            "queued_to_start_median_s": round(statistics.median(latency), 3),
            "task_runtime_median_s": round(statistics.median(running), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--consumers", type=int, default=40)
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args()
    started = time.monotonic()
    out: dict = {"consumers": args.consumers, "worker_concurrency": WORKERS[0].concurrency}
    with tempfile.TemporaryDirectory(prefix="skein-bench-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        campaigns = tmp / "campaigns"
        campaigns.mkdir()
        dags = dags_folder(tmp, args.tasks)
        for name in ("one", "two"):
            demo_campaign(tmp, campaigns, f"bench-{name}", args.consumers, {"retries": 1, "retry_delay_s": 1},
                          ["alice"])
        common = {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
        with servers() as found:
            env = AirflowEnv(tmp / "celery", campaigns, USERS, celery_env(found, **common))
            try:
                env.start()
                start_workers(env, WORKERS[:1])
                out["campaign"] = {"1_worker": campaign_rate(env, "bench-one")}
                start_workers(env, WORKERS[1:])
                out["campaign"]["2_workers"] = campaign_rate(env, "bench-two")
                out["overhead"] = {"CeleryExecutor": noop_overhead(env, args.tasks)}
            finally:
                env.stop()
        with servers() as found:
            local = {**celery_env(found, **common), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
            env = AirflowEnv(tmp / "local", campaigns, USERS, local)
            try:
                env.start()
                out["overhead"]["LocalExecutor"] = noop_overhead(env, args.tasks)
            finally:
                env.stop()
    c, o = out["campaign"], out["overhead"]
    out["speedup_2_vs_1_worker"] = round(c["2_workers"]["consumers_per_minute"]
                                         / c["1_worker"]["consumers_per_minute"], 2)
    out["celery_minus_local_s_per_task"] = round(o["CeleryExecutor"]["s_per_task"]
                                                 - o["LocalExecutor"]["s_per_task"], 3)
    out["bench_s"] = round(time.monotonic() - started)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
