"""Import what the engine's steps need once, in a process that forks the processes running them.

A forked process starts with its parent's modules. Airflow's LocalExecutor and Celery's
prefork pool fork every task runner from a long-lived worker process, so modules imported
there are never imported again by a task; imported in each task, they cost more than the
work of a small campaign. Measured here (2 cores): Great Expectations takes ~4 s to import
(pandas, scipy, a pydantic model per expectation; 8-11 s without bytecode), the engine ~1 s,
while the whole 40-consumer demo campaign takes ~11 s in one ``skein run`` process.

Nothing is built or opened here, only imported: a connection, a thread or a GX context
made before a fork would be shared by every child. (GX's ephemeral context costs ~20 ms;
each process builds its own, once: ``skein.simulation.gx_validation``.)

>>> "great_expectations" in MODULES and all(m.split(".")[0] != "airflow" for m in MODULES)
True
"""

from __future__ import annotations

import importlib
import sys
import time

# What the steps import lazily and is slow to import, in the order the steps need it.
MODULES = (
    "skein.pipeline",  # every step; pulls sqlglot, pyarrow, SQLAlchemy, the rewrite rules
    "duckdb",
    "sqlglot.dialects.duckdb",
    "skein.simulation.gx_validation",
    "great_expectations",  # simulation and monitoring
    "great_expectations.data_context.types.base",
)


def missing(modules: tuple[str, ...] = MODULES) -> list[str]:
    """Which of ``modules`` this process has not imported yet.

    >>> missing(("sys", "skein.warm", "no_such_module_here"))
    ['no_such_module_here']
    """
    return [m for m in modules if m not in sys.modules]


def preload(modules: tuple[str, ...] = MODULES) -> dict[str, float]:
    """Import ``modules``; the seconds each took (~0 when it was already imported).

    A module that fails to import is left for the step that needs it to report: preloading
    must never stop the process that asked for it.

    >>> sorted(preload(("json", "skein.batches")))
    ['json', 'skein.batches']
    """
    took: dict[str, float] = {}
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - see the docstring
            continue
        took[name] = round(time.perf_counter() - started, 3)
    return took
