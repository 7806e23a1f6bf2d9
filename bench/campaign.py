"""The same campaign run by the engine alone and as an Airflow DAG: the orchestration overhead.

Two identical demo fleets (same size and seed). (a) ``skein run`` (one process, no Airflow);
(b) the campaign DAG on a real Airflow (api-server, scheduler, dag-processor; LocalExecutor,
SQLite), triggered over the REST API, its approval answered as soon as it waits. Wall time
from trigger to the run's end, minus the approval's wait for its answer; Airflow's start-up
is reported apart. Both must apply the same consumers. Goals (issue 5): b / a <= 1.5, and b under 5 minutes for 1,000 consumers.

    python bench/campaign.py [--consumers 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKEIN = ROOT / ".venv" / "bin" / "skein"
GOAL_RATIO, GOAL_SECONDS = 1.5, 300


def demo(out: Path, consumers: int) -> Path:
    subprocess.run([str(SKEIN), "demo-fleet", "--out", str(out), "--consumers", str(consumers)],
                   check=True, capture_output=True)
    return out / "campaigns" / "plays-v2.yaml"


def applied(store_url: str) -> list[str]:
    from skein.store import CampaignStore

    store = CampaignStore(store_url)
    try:
        return sorted(e.consumer for e in store.events("plays-v2", actions=("applied",)))
    finally:
        store.dispose()


def engine_alone(tmp: Path, consumers: int) -> dict:
    campaign = demo(tmp / "engine-fleet", consumers)
    env = {**os.environ, "SKEIN_HOME": str(tmp / "engine-home")}
    started = time.perf_counter()
    proc = subprocess.run([str(SKEIN), "run", str(campaign), "--run-id", "bench", "--no-soak", "--approve", "all", "--json"],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 3):
        raise SystemExit(f"skein run failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return {"seconds": round(seconds, 1), "outcome": json.loads(proc.stdout),
            "applied": applied(f"sqlite:///{tmp / 'engine-home' / 'store.db'}")}


def with_airflow(tmp: Path, consumers: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from airflow_env import AirflowEnv

    demo(tmp / "airflow-fleet", consumers)
    env = AirflowEnv(tmp / "airflow", tmp / "airflow-fleet" / "campaigns", {"admin": "admin"})
    started = time.perf_counter()
    env.start()
    dag = "skein__plays-v2"
    env.wait_for_dag(dag)
    startup = time.perf_counter() - started
    try:
        started = time.perf_counter()
        run = env.trigger(dag)
        env.wait_for_approval(dag, run, "approval", timeout=1800)
        asked = time.perf_counter() - started
        # The human's part is not the orchestrator's: time from the answer on. (The helper
        # waits a few seconds after the task parks before answering; see airflow_env.)
        answered = time.perf_counter()
        env.decide(dag, run, "approval", "Approve all", user="admin")
        state = env.wait_for_run(dag, run, timeout=3600)
        seconds = asked + (time.perf_counter() - answered)
        instances = sum(len(v) for v in env.task_states(dag, run).values())
    finally:
        env.stop()
    return {"seconds": round(seconds, 1), "startup_seconds": round(startup, 1),
            "until_approval_seconds": round(asked, 1), "state": state, "task_instances": instances,
            "applied": applied(f"sqlite:///{tmp / 'airflow' / 'skein' / 'store.db'}")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, default=1000)
    parser.add_argument("--keep", help="keep fleets and Airflow home here (default: a temp dir)")
    args = parser.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="skein-bench-campaign-"))
    if tmp.exists() and args.keep:
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        a = engine_alone(tmp, args.consumers)
        b = with_airflow(tmp, args.consumers)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    ratio = b["seconds"] / a["seconds"]
    print(json.dumps({
        "benchmark": "campaign", "consumers": args.consumers,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "engine_alone_s": a["seconds"], "airflow_s": b["seconds"],
        "airflow_until_approval_s": b["until_approval_seconds"],
        "airflow_startup_s": b["startup_seconds"], "airflow_task_instances": b["task_instances"],
        "airflow_run_state": b["state"], "overhead_ratio": round(ratio, 2),
        "same_consumers_applied": a["applied"] == b["applied"], "applied": len(a["applied"]),
        "engine_outcome": a["outcome"],
        "goals": {"ratio_le_1_5": ratio <= GOAL_RATIO, "airflow_under_5_min": b["seconds"] <= GOAL_SECONDS},
    }, indent=2))


if __name__ == "__main__":
    main()
