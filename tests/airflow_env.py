"""A real Airflow for tests: api-server, scheduler and dag-processor as separate processes
(LocalExecutor, SQLite), so a test can kill the scheduler alone and start it again.

Users come from SimpleAuthManager (``name:role`` pairs); their generated passwords are read
from ``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
HUMAN_DELAY_S = 8  # see AirflowEnv.wait_for_approval


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class AirflowEnv:
    def __init__(self, home: Path, campaigns: Path, users: dict[str, str], extra_env: dict | None = None):
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self._tokens: dict[str, str] = {}
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in users.items()),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            # A killed scheduler's tasks are found and reset within seconds, not the default
            # 5 minutes (orphan check) after 30 s (a scheduler counted dead).
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "SKEIN_CAMPAIGNS_DIR": str(campaigns),
            "SKEIN_HOME": str(home / "skein"),
            # this checkout's plugins and engine, not the venv's editable install of skein
            "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")]),
            **(extra_env or {}),
        }

    # --- processes ---------------------------------------------------------------------
    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "airflow"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=True)

    def start(self) -> "AirflowEnv":
        self.airflow("db", "migrate")
        subprocess.run([str(BIN / "python"), "-m", "skein_airflow.settings_loader",
                        str(ROOT / "airflow_settings.yaml")], env=self.env, check=True,
                       capture_output=True, cwd=ROOT)
        for name in ("api-server", "dag-processor", "scheduler"):
            self.spawn(name)
        self.wait_healthy()
        return self

    def spawn(self, name: str, args: list[str] | None = None, env: dict | None = None) -> None:
        """Start ``airflow <name>``, or ``airflow <args>`` under ``name`` (e.g. a Celery worker
        per queue), with ``env`` added to the environment; its output goes to
        ``$AIRFLOW_HOME/<name>.log``. Each component is its own process group (``kill``)."""
        log = open(self.home / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([str(BIN / "airflow"), *(args or [name])],
                                            env={**self.env, **(env or {})}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, name: str) -> None:
        """SIGKILL the component's process group: the component and the processes it runs in
        its group. Not the task runners: Airflow 3.3's supervisor puts each in a process group
        of its own (``tests/celery_env.py``'s ``kill_tree`` kills everything under a component,
        as a machine's death would)."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.time() + 20
        for name in list(self.procs):
            try:
                self.procs[name].wait(timeout=max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(self.procs[name].pid, signal.SIGKILL)
            self.procs.pop(name)

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                health = self.get("/api/v2/monitor/health", user=None)
                if health["scheduler"]["status"] == "healthy":
                    return
            except (OSError, ApiError, KeyError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow not healthy after {timeout} s; logs in {self.home}")

    # --- REST API ----------------------------------------------------------------------
    def password(self, user: str) -> str:
        path = self.home / "simple_auth_manager_passwords.json.generated"
        return json.loads(path.read_text())[user]

    def token(self, user: str) -> str:
        if user not in self._tokens:
            body = self._call("POST", "/auth/token", {"username": user, "password": self.password(user)},
                              None)
            self._tokens[user] = body["access_token"]
        return self._tokens[user]

    def get(self, path: str, user: str | None = "admin"):
        return self._call("GET", path, None, self.token(user) if user else None)

    def post(self, path: str, body: dict, user: str = "admin"):
        return self._call("POST", path, body, self.token(user))

    def patch(self, path: str, body: dict, user: str = "admin"):
        return self._call("PATCH", path, body, self.token(user))

    def _call(self, method: str, path: str, body, token):
        request = urllib.request.Request(
            self.base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode("utf-8", "replace")) from None

    # --- DAG runs ----------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                self.get(f"/api/v2/dags/{dag_id}")
                return
            except ApiError:
                time.sleep(1)
        raise TimeoutError(f"{dag_id} not parsed after {timeout} s")

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        for ti in tis["task_instances"]:
            out.setdefault(ti["task_id"], []).append(ti["state"])
        return out

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise TimeoutError(f"{dag_id}/{run_id} still running after {timeout} s: "
                           f"{self.task_states(dag_id, run_id)}")

    def wait_for_approval(self, dag_id: str, run_id: str, task_id: str, timeout: float = 600) -> dict:
        """The pending HITL request of ``task_id`` (fails early if the run ends first)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            pending = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/hitlDetails")
            for detail in pending.get("hitl_details", []):
                ti = detail.get("task_instance") or {}
                if ti.get("task_id") == task_id and not detail.get("response_received"):
                    # Answer as a person would, not within a second of the request: Airflow
                    # 3.3.2 fails a HITL task whose answer re-queues it before the scheduler
                    # has processed the executor's report of the task parking ("finished with
                    # state success, but the task instance's state attribute is queued").
                    state = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
                    if state.get("state") == "awaiting_input":
                        time.sleep(HUMAN_DELAY_S)
                        return detail
            if self.run_state(dag_id, run_id) in ("success", "failed"):
                raise AssertionError(f"run ended before {task_id} asked: {self.task_states(dag_id, run_id)}")
            time.sleep(2)
        raise TimeoutError(f"no approval request from {task_id}: {self.task_states(dag_id, run_id)}")

    def answer(self, dag_id: str, run_id: str, task_id: str, option: str, user: str, map_index: int = -1):
        return self.patch(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}"
                          "/hitlDetails", {"chosen_options": [option], "params_input": {}}, user=user)

    def decide(self, dag_id: str, run_id: str, task_id: str, option: str, user: str,
               timeout: float = 120) -> dict:
        """Answer ``task_id`` and see the answer taken; when Airflow lost it (the race in
        ``wait_for_approval``) the approval's retry asks again, and it is answered again."""
        deadline = time.time() + timeout
        answer = self.answer(dag_id, run_id, task_id, option, user)
        while time.time() < deadline:
            ti = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
            if ti["state"] in ("success", "skipped"):
                return answer
            if ti["state"] in ("failed", "upstream_failed"):
                raise AssertionError(f"{task_id} ended {ti['state']} after the answer")
            if ti["state"] == "awaiting_input":
                pending = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/hitlDetails")
                if any((d.get("task_instance") or {}).get("task_id") == task_id
                       and not d.get("response_received") for d in pending.get("hitl_details", [])):
                    self.wait_for_approval(dag_id, run_id, task_id)
                    answer = self.answer(dag_id, run_id, task_id, option, user)
            time.sleep(1)
        raise TimeoutError(f"{task_id} did not take the answer {option!r} in {timeout} s")
