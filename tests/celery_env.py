"""A real distributed Skein for tests: the ``distributed`` profile's settings
(``skein_airflow.profiles``) on the local PostgreSQL and Redis, under names of the test's own.

Isolation: every test environment gets a fresh ``DistributedServers`` name ``skein_t<hex>``:
databases ``skein_t<hex>_airflow`` (metadata, Celery results) and ``skein_t<hex>_store``
(campaign store), and Redis keys under ``skein_t<hex>:`` (kombu's ``global_keyprefix``: queues,
unacknowledged messages, bindings, pub/sub channels). ``servers()`` drops both databases and
deletes only that prefix's keys afterwards, even on failure. ``SKEIN_TEST_POSTGRES``
(``postgresql://user@host:port``) and ``SKEIN_TEST_REDIS`` (``redis://host:port/db``) point at
other servers.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from airflow_env import ROOT, AirflowEnv

if str(ROOT / "plugins") not in sys.path:  # the profiles live with the Airflow glue
    sys.path.insert(0, str(ROOT / "plugins"))
from skein_airflow.profiles import WORKERS, DistributedServers, Worker, distributed_env, prepare, worker_args  # noqa: E402

POSTGRES = os.environ.get("SKEIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("SKEIN_TEST_REDIS", "redis://127.0.0.1:6379/13")
# "[<celery id>] Executing workload in Celery: ExecuteTask(... ti=TaskInstanceDTO(... task_id='x'"
EXECUTED = re.compile(r"Executing workload in Celery: .*?task_id='([^']+)'.*?map_index=(-?\d+)")


@contextmanager
def servers():
    """Fresh databases and a Redis key prefix of this test's own; removed afterwards."""
    import psycopg2
    import redis

    found = DistributedServers(POSTGRES, REDIS, f"skein_t{uuid.uuid4().hex[:12]}")
    client = redis.Redis.from_url(REDIS)
    client.ping()
    try:
        prepare(found)
        yield found
    finally:
        admin = psycopg2.connect(f"{POSTGRES}/postgres")
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                for database in found.databases.values():
                    cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            admin.close()
        keys = list(client.scan_iter(match=f"{found.key_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def celery_env(found: DistributedServers, **overrides: str) -> dict[str, str]:
    """The distributed profile's settings, plus what makes a test fast on two cores."""
    return {**distributed_env(found), "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2", **overrides}


def start_worker(env: AirflowEnv, worker: Worker) -> None:
    env.spawn(worker.name, worker_args(worker, str(env.home / f"{worker.name}.pid")))


def start_workers(env: AirflowEnv, workers=WORKERS) -> None:
    for worker in workers:
        start_worker(env, worker)
    wait_ready(env, [w.name for w in workers])


def wait_ready(env: AirflowEnv, names: list[str], timeout: float = 180) -> None:
    """Every worker logged Celery's "<name>@<host> ready."."""
    deadline = time.time() + timeout
    waiting = set(names)
    while waiting and time.time() < deadline:
        for name in list(waiting):
            if env.procs[name].poll() is not None:
                raise AssertionError(f"{name} exited {env.procs[name].returncode}:\n{tail(env, name)}")
            if re.search(rf"{re.escape(name)}@\S+ ready\.", log_text(env, name)):
                waiting.discard(name)
        time.sleep(1)
    if waiting:
        raise TimeoutError(f"not ready after {timeout} s: {sorted(waiting)}\n"
                           + "\n".join(tail(env, n) for n in waiting))


def log_text(env: AirflowEnv, name: str) -> str:
    path = env.home / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def tail(env: AirflowEnv, name: str, lines: int = 40) -> str:
    return f"--- {name}.log\n" + "\n".join(log_text(env, name).splitlines()[-lines:])


def executed(env: AirflowEnv, name: str) -> set[tuple[str, int]]:
    """(task id, map index) of every workload the worker ``name`` was handed."""
    return {(t, int(m)) for t, m in EXECUTED.findall(log_text(env, name))}


def task_instances(env: AirflowEnv, dag_id: str, run_id: str) -> list[dict]:
    return env.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")["task_instances"]


def tries(env: AirflowEnv, dag_id: str, run_id: str) -> list[dict]:
    """Every try of every task instance of the run (earlier tries from the history), with
    ``hostname``, ``pid``, ``start_date``, ``end_date``, ``state``, ``pool``."""
    out = []
    for ti in task_instances(env, dag_id, run_id):
        path = (f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                + (f"/{ti['map_index']}" if ti["map_index"] >= 0 else "") + "/tries")
        out += env.get(path)["task_instances"]
    return out


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
