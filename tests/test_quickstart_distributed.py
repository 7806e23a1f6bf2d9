"""`SKEIN_PROFILE=distributed make run` (scripts/run.sh) end to end, on the local PostgreSQL and Redis.

The profile's servers come from ``skein_airflow.profiles``; this test gives them names of its
own (``SKEIN_DISTRIBUTED_NAME``: databases ``skein_t<hex>_airflow`` / ``_store``, Redis keys under
``skein_t<hex>:``), removed at the end. It checks what the profile promises: the metadata
database, the campaign store and the Celery results are in PostgreSQL, the executor is
CeleryExecutor with both workers consuming their region queues, a triggered dry run succeeds
with its tasks executed by the workers, and Ctrl-C stops every process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from celery_env import POSTGRES, REDIS, servers
from test_quickstart import api, dry_run, free_port, processes_using

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "scripts" / "run.sh"

pytestmark = pytest.mark.slow


def test_distributed_profile_runs_the_demo_on_celery(tmp_path):
    import psycopg2
    import sqlalchemy as sa

    with servers() as found:
        home, port = tmp_path / "airflow", free_port()
        base = f"http://localhost:{port}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SKEIN_"))},
               "SKEIN_PROFILE": "distributed", "SKEIN_POSTGRES": POSTGRES, "SKEIN_REDIS": REDIS,
               "SKEIN_DISTRIBUTED_NAME": found.name,
               "SKEIN_AIRFLOW_HOME": str(home), "SKEIN_DEMO_DIR": str(tmp_path / "demo"),
               "SKEIN_AIRFLOW_PORT": str(port), "SKEIN_DEMO_CONSUMERS": "6",
               "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
        log_path = tmp_path / "run.log"
        log = log_path.open("w")
        proc = subprocess.Popen([str(RUN)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 300
            while "Stop      Ctrl-C" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()[-4000:]
                assert time.monotonic() < deadline, log_path.read_text()[-4000:]
                time.sleep(1)
            output = log_path.read_text()
            assert "not registered yet" not in output
            assert ("Profile   distributed: CeleryExecutor, workers worker-eu (default,skein-eu), "
                    "worker-us (default,skein-us)") in output
            assert f"audit    SKEIN_STORE_URL=postgresql+psycopg2://" in output

            password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
            token = api(base, "/auth/token", body={"username": "admin", "password": password})["access_token"]
            run_id, state = dry_run(base, token, timeout=300)
            assert state == "success"
            outcome = api(base, f"/api/v2/dags/skein__plays-v2/dagRuns/{run_id}/taskInstances/"
                                "finalize/xcomEntries/return_value", token)["value"]
            assert outcome["status"] == "dry_run"
            tis = api(base, f"/api/v2/dags/skein__plays-v2/dagRuns/{run_id}/taskInstances?limit=1000",
                      token)["task_instances"]
            assert {ti["queue"] for ti in tis} == {"default"}
            # Every task ran on a Celery worker: the workers' logs name each of them.
            worker_logs = "".join((home / f"{w}.log").read_text() for w in ("worker-eu", "worker-us"))
            ran = [ti for ti in tis if ti["state"] == "success"]
            assert ran and all(f"task_id='{ti['task_id']}'" in worker_logs for ti in ran)

            # The metadata DB (and Celery's results), and the campaign store, are PostgreSQL's.
            with psycopg2.connect(f"{POSTGRES}/{found.databases['airflow']}") as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM dag_run WHERE run_id = %s", (run_id,))
                assert cur.fetchone() == (1,)
                cur.execute("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
                assert cur.fetchone()[0] >= len(ran)
            engine = sa.create_engine(found.url(found.databases["store"], "psycopg2"))
            with engine.connect() as conn:
                actions = {r[0] for r in conn.execute(sa.text(
                    "SELECT action FROM skein_audit WHERE run_id = :r"), {"r": run_id})}
            engine.dispose()
            assert {"discovered", "planned", "finished"} <= actions
            assert not (home / "airflow.db").exists() and not (home / "skein" / "store.db").exists()
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(2)
            leftovers = processes_using(home)
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            log.close()
        assert "stopping Airflow" in log_path.read_text()
        assert leftovers == [], f"processes still running after Ctrl-C: {leftovers}"
