"""The engine preloaded in the Airflow processes that fork task runners (skein_airflow.preload).

In real Airflow runs: ``test_campaign_e2e`` (scheduler with LocalExecutor; every task log says
the engine was preloaded) and ``test_fleet_celery`` (Celery workers preload, the scheduler
does not). Here: which processes preload, and what a preload leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pathlib import Path

import pytest

from skein_airflow.preload import forks_task_runners

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, threading
from skein_airflow.preload import preload_for_task_runners
took = preload_for_task_runners(sys.argv[1:])
print(json.dumps({"took": took, "gx": "great_expectations" in sys.modules,
                  "threads": threading.active_count()}))
"""


def probe(argv: list[str], **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ("AIRFLOW__CORE__EXECUTOR", "SKEIN_PRELOAD")}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")])
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], env={**environment, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1]) | {"stderr": out.stderr}


@pytest.mark.parametrize(("argv", "executors", "expected"), [
    (["airflow", "scheduler"], "LocalExecutor", True),
    (["airflow", "scheduler", "--num-runs", "3"], "airflow.executors.local_executor.LocalExecutor", True),
    (["airflow", "scheduler"], "CeleryExecutor,LocalExecutor", True),
    (["airflow", "scheduler"], "CeleryExecutor", False),
    (["airflow", "scheduler"], "KubernetesExecutor", False),
    (["airflow", "celery", "worker", "--queues", "skein-eu"], "CeleryExecutor", True),
    (["airflow", "celery", "flower"], "CeleryExecutor", False),
    (["airflow", "dag-processor"], "LocalExecutor", False),
    (["airflow", "triggerer"], "LocalExecutor", False),
    (["airflow", "api-server"], "LocalExecutor", False),
    (["airflow", "dags", "list"], "LocalExecutor", False),
    (["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string", "{}"],
     "KubernetesExecutor", False),
])
def test_only_processes_that_fork_task_runners_preload(argv, executors, expected):
    assert forks_task_runners(argv, executors) is expected


def test_a_scheduler_preloads_modules_and_nothing_else():
    """Imports only: no thread (a fork copies only the thread that forked), and the start-up
    line says what it cost."""
    got = probe(["airflow", "scheduler"], AIRFLOW__CORE__EXECUTOR="LocalExecutor")
    assert got["gx"] and got["threads"] == 1
    assert set(got["took"]) >= {"skein.pipeline", "duckdb", "great_expectations"}
    assert "skein: preloaded for the task runners this process forks" in got["stderr"]


@pytest.mark.parametrize(("argv", "env"), [
    (["airflow", "api-server"], {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}),
    (["airflow", "scheduler"], {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "SKEIN_PRELOAD": "0"}),
])
def test_other_processes_and_a_switched_off_preload_import_nothing(argv, env):
    got = probe(argv, **env)
    assert got["took"] is None and not got["gx"] and got["stderr"] == ""


def test_preload_can_be_forced_in_any_process():
    got = probe(["airflow", "api-server"], SKEIN_PRELOAD="1")
    assert got["gx"] and got["took"]


def test_setup_compiled_the_installed_modules():
    """``scripts/setup.sh`` writes bytecode for the venv: with PYTHONDONTWRITEBYTECODE set, no
    import would, and every process would compile Airflow and GX from source again."""
    import importlib.util

    import airflow
    import great_expectations
    import sqlglot

    for module in (airflow, great_expectations, sqlglot):
        assert Path(importlib.util.cache_from_source(module.__file__)).is_file(), module.__name__
