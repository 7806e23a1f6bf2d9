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


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    return alive(pid) and not _zombie(pid)


# ---- processes ---------------------------------------------------------------------------------

def children() -> dict[int, list[int]]:
    """Parent pid -> child pids, of every process on this machine (from /proc)."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def tree(pid: int) -> set[int]:
    """``pid`` and every process under it, whatever their process groups (Airflow's task
    runners have groups of their own: killing the worker's group would leave them running)."""
    kids, found, todo = children(), set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo += kids.get(current, [])
    return found


def kill_tree(env: AirflowEnv, name: str) -> set[int]:
    """SIGKILL the component ``name`` and every process under it, as if its machine died:
    frozen first (SIGSTOP, so none spawns or exits meanwhile), then killed. Returns the pids."""
    import signal

    proc = env.procs.pop(name)
    pids = tree(proc.pid)
    for pid in pids:
        _signal(pid, signal.SIGSTOP)
    pids |= tree(proc.pid)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while any(running(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    return pids


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def owner(env: AirflowEnv, pid: int) -> str | None:
    """The component whose process tree holds ``pid``."""
    return next((name for name, proc in env.procs.items() if pid in tree(proc.pid)), None)


# ---- a distributed Airflow and demo campaigns ---------------------------------------------------

@contextmanager
def distributed_airflow(tmp: Path, campaigns: Path, users: dict[str, str], extra: dict | None = None,
                        workers=WORKERS):
    """api-server, scheduler, dag-processor and the profile's two workers, on servers of this
    test's own (removed afterwards)."""
    with servers() as found:
        env = AirflowEnv(tmp / "airflow", campaigns, users, celery_env(found, **(extra or {})))
        try:
            env.start()
            start_workers(env, workers)
            yield env, found
        finally:
            env.stop()


def demo_campaign(tmp: Path, campaigns: Path, campaign_id: str, consumers: int, fleet: dict,
                  approvers: list[str]) -> Path:
    """A demo fleet of its own and its campaign ``campaign_id`` (absolute paths, manual runs)."""
    import subprocess

    import yaml

    out = tmp / campaign_id
    subprocess.run([str(ROOT / ".venv" / "bin" / "skein"), "demo-fleet", "--out", str(out),
                    "--consumers", str(consumers)], check=True, capture_output=True)
    spec = yaml.safe_load((out / "campaigns" / "plays-v2.yaml").read_text())
    spec["campaign"] = campaign_id
    spec["warehouse"] = f"duckdb:///{out / 'warehouse.duckdb'}"
    spec["consumers"] = [{"repo": str(out / "repos" / "*"), "dialect": "duckdb"}, {"warehouse_views": True}]
    spec["rollout"].update({"schedule": None, "approvers": approvers})
    spec["fleet"] = fleet
    (campaigns / f"{campaign_id}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def store_events(store_url: str, campaign_id: str, run_id: str | None = None):
    from skein.store import CampaignStore

    store = CampaignStore(store_url)
    try:
        return store.events(campaign_id, run_id)
    finally:
        store.dispose()


def merges_touching(fleet: Path, consumer: str) -> int:
    """Merges on the consumer's repository's default branch that changed its file."""
    import subprocess

    repo, path = fleet / "repos" / consumer.split("/")[0], consumer.split("/", 1)[1]
    return len(subprocess.run(["git", "-C", str(repo), "log", "--merges", "--first-parent", "--format=%H",
                               "--", path], capture_output=True, text=True, check=True).stdout.split())
