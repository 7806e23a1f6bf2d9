"""Preload Skein's engine in the Airflow processes that fork task runners.

Airflow 3 runs each task in a process forked from a long-lived parent: the LocalExecutor's
workers, forked from the scheduler, and the Celery worker's pool processes. A task whose
parent already imported Great Expectations and the engine starts with them; otherwise each
task instance pays seconds of imports (``skein.warm``). Only those parents preload: the
api-server, dag-processor, triggerer, Kubernetes pods and CLI commands start as before.

Called from ``plugins/airflow_local_settings.py``, Airflow's site hook. A deployment with its
own ``airflow_local_settings.py`` calls ``preload_for_task_runners()`` from it instead.

``SKEIN_PRELOAD``: ``auto`` (the default, as above), ``0`` never, ``1`` in every process.
"""

from __future__ import annotations

import os
import sys

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")


def forks_task_runners(argv: list[str], executors: str) -> bool:
    """Whether this Airflow command runs task runners in forks of itself.

    >>> forks_task_runners(["airflow", "scheduler"], "LocalExecutor")
    True
    >>> forks_task_runners(["airflow", "scheduler"], "CeleryExecutor,airflow.executors.local_executor.LocalExecutor")
    True
    >>> forks_task_runners(["airflow", "scheduler"], "CeleryExecutor")
    False
    >>> forks_task_runners(["/venv/bin/airflow", "celery", "worker", "-q", "eu"], "CeleryExecutor")
    True
    >>> forks_task_runners(["airflow", "api-server"], "LocalExecutor")
    False
    """
    command = [a for a in argv[1:] if not a.startswith("-")][:2]
    if command[:1] == ["scheduler"]:
        # "LocalExecutor", "airflow.executors.local_executor.LocalExecutor", "alias:module.Class"
        return any(e.strip().rsplit(".", 1)[-1].rsplit(":", 1)[-1] == "LocalExecutor"
                   for e in executors.split(","))
    return command == ["celery", "worker"]


def preload_for_task_runners(argv: list[str] | None = None) -> dict[str, float] | None:
    """Preload when this process forks task runners (or ``SKEIN_PRELOAD=1``); the seconds
    each module took, or None when this process does not preload."""
    setting = os.environ.get("SKEIN_PRELOAD", "auto").strip().lower()
    if setting in OFF:
        return None
    if setting not in ON:
        from airflow.configuration import conf

        if not forks_task_runners(sys.argv if argv is None else argv,
                                  conf.get("core", "executor", fallback="")):
            return None
    from skein.warm import preload

    took = preload()
    # Airflow configures logging right after its site hook: print, so the component's output
    # says what its start-up spent on this.
    print(f"skein: preloaded for the task runners this process forks, in {sum(took.values()):.1f} s: "
          + ", ".join(f"{m} {s:.1f} s" for m, s in took.items()), file=sys.stderr, flush=True)
    return took
