"""`make run` (scripts/run.sh) end to end, with its run state in a temp dir.

1. With SKEIN_RUN_NO_AIRFLOW=1: setup, metadata DB, settings, demo fleet and the
   discovery printout, then stop.
2. Again: the demo fleet is reused.
3. The real thing: Airflow standalone on a free port; the demo DAG is listed by
   the REST API, a triggered run succeeds, its XCom and report agree; Ctrl-C
   (SIGINT to the process group, as a terminal sends it) stops every process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from skein.paths import run_folder

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "scripts" / "run.sh"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quickstart")
    env = {**os.environ,
           "SKEIN_AIRFLOW_HOME": str(tmp / "airflow"),
           "SKEIN_DEMO_DIR": str(tmp / "demo"),
           "SKEIN_AIRFLOW_PORT": str(free_port()),
           # Log servers of the worker and triggerer: keep clear of a developer's `make run`.
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
    env.pop("AIRFLOW_HOME", None)
    return tmp, env


def run_without_airflow(env) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUN)], env={**env, "SKEIN_RUN_NO_AIRFLOW": "1"},
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)


def test_first_run_builds_the_demo_and_prints_discovery(state):
    tmp, env = state
    proc = run_without_airflow(env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "airflow_settings.yaml loaded: 2 connections, 2 pools, 1 variables" in out
    assert "campaign plays-v2: analytics.plays -> analytics_v2.plays" in out
    assert "plan for plays-v2 written to" in out
    # the plan is a dry run in the store the portal reads (issue 20, defect 8)
    assert any((tmp / "airflow" / "skein" / "runs" / "plays-v2").glob("make-run__*/patches/*.diff"))
    from skein import views
    from skein.store import CampaignStore

    store = CampaignStore(f"sqlite:///{tmp / 'airflow' / 'skein' / 'store.db'}")
    row = views.catalog_row(views.Sources(store=store, home=tmp / "airflow" / "skein"), "plays-v2")
    assert row.consumers > 0 and row.state == "planned", row
    assert "SKEIN_RUN_NO_AIRFLOW=1: not starting Airflow." in out
    assert (tmp / "demo" / "campaigns" / "plays-v2.yaml").is_file()
    assert (tmp / "airflow" / "airflow.db").is_file()


def test_second_run_reuses_the_demo_fleet(state):
    _, env = state
    proc = run_without_airflow(env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "up to date (consumers=40 seed=7)" in proc.stdout


def api(base: str, path: str, token: str | None = None, body: dict | None = None) -> dict:
    request = urllib.request.Request(base + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def dry_run(base: str, token: str, timeout: float) -> tuple[str, str]:
    """Trigger a dry run of the demo campaign and wait for it; (run id, its end state)."""
    run_id = api(base, "/api/v2/dags/skein__plays-v2/dagRuns", token,
                 body={"logical_date": None, "conf": {"dry_run": True}})["dag_run_id"]
    deadline = time.monotonic() + timeout
    while (run := api(base, f"/api/v2/dags/skein__plays-v2/dagRuns/{run_id}", token))[
            "state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, run
        time.sleep(1)
    return run_id, run["state"]


def processes_using(home: Path) -> list[int]:
    """Ids of live processes whose environment names this test's AIRFLOW_HOME."""
    needle = f"AIRFLOW_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_make_run_serves_the_dag_and_ctrl_c_stops_everything(state):
    tmp, env = state
    home, base = tmp / "airflow", f"http://localhost:{env['SKEIN_AIRFLOW_PORT']}"
    log = (tmp / "run.log").open("w")
    proc = subprocess.Popen(
        [str(RUN)], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, like a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while "Skein is running" not in (tmp / "run.log").read_text():
            assert proc.poll() is None, (tmp / "run.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp / "run.log").read_text()[-4000:]
            time.sleep(1)
        output = (tmp / "run.log").read_text()
        assert "not registered yet" not in output

        password = json.loads((home / "simple_auth_manager_passwords.json.generated")
                              .read_text())["admin"]
        assert f"password {password}" in output
        token = api(base, "/auth/token", body={"username": "admin", "password": password})[
            "access_token"]
        dags = api(base, "/api/v2/dags", token)
        assert [d["dag_id"] for d in dags["dags"]] == ["skein__plays-v2"]
        assert api(base, "/api/v2/importErrors", token)["total_entries"] == 0

        # A dry run: the whole plan (discovery, agents, simulation, evidence), no approval,
        # nothing applied. The approval path is tests/test_campaign_e2e.py's subject.
        run_id, state = dry_run(base, token, timeout=400)
        assert state == "success"
        batches = api(base, f"/api/v2/dags/skein__plays-v2/dagRuns/{run_id}/taskInstances/"
                            "discover/xcomEntries/return_value", token)["value"]
        directory = home / "skein" / "runs" / "plays-v2" / run_folder(run_id)
        report = json.loads((directory / "discovery.json").read_text())
        # XCom holds consumer ids only: every impacted consumer in exactly one batch.
        assert sorted(sum(batches, [])) == sorted(c["id"] for c in report["consumers"])
        plan = json.loads((directory / "plan.json").read_text())
        assert plan["counts"]["patched"] > 0 and (directory / "summary.html").is_file()
        outcome = api(base, f"/api/v2/dags/skein__plays-v2/dagRuns/{run_id}/taskInstances/"
                            "finalize/xcomEntries/return_value", token)["value"]
        assert outcome["status"] == "dry_run" and outcome["applied"] == 0
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(2)
        leftovers = processes_using(home)
        for pid in leftovers:  # never leave a stray Airflow behind, even on failure
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
    assert "stopping Airflow" in (tmp / "run.log").read_text()
    assert leftovers == [], f"processes still running after Ctrl-C: {leftovers}"
