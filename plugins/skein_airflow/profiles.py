"""Deployment profiles: which servers and executor Airflow uses, chosen by one setting.

``SKEIN_PROFILE=embedded`` (the default): SQLite metadata database, SQLite campaign store,
LocalExecutor (``airflow standalone``). Nothing to install or start.

``SKEIN_PROFILE=distributed``: the metadata database and the campaign store in PostgreSQL
(databases ``<name>_airflow`` and ``<name>_store``), CeleryExecutor with a Redis broker and
its result backend in PostgreSQL, two Celery workers serving region queues, and late
acknowledgement: a message is acknowledged once its task has finished, not when a worker
takes it, so a worker that dies loses no task (see ``docs/deploy.md``, "When a worker dies").

Every setting of a profile is here, once: ``scripts/run.sh`` (``make run``), the tests
(``tests/celery_env.py``), ``docker-compose.yaml`` (checked by ``tests/test_deploy_files.py``)
and the benchmarks take them from this module::

    python -m skein_airflow.profiles env distributed     # `export NAME=value` lines
    python -m skein_airflow.profiles prepare distributed # create the databases if missing
    python -m skein_airflow.profiles workers             # `name airflow-arguments` per worker

Knobs (environment): ``SKEIN_POSTGRES`` (server, default ``postgresql://postgres@127.0.0.1:5432``),
``SKEIN_REDIS`` (broker, default ``redis://127.0.0.1:6379/0``), ``SKEIN_DISTRIBUTED_NAME``
(database names and Redis key prefix, default ``skein``).

This module imports neither Airflow nor the engine, so it runs before either is configured.

>>> env = distributed_env(DistributedServers("postgresql://u@db:5432", "redis://r:6379/2", "t1"))
>>> env["AIRFLOW__CORE__EXECUTOR"], env["AIRFLOW__CELERY__TASK_ACKS_LATE"]
('CeleryExecutor', 'True')
>>> env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], env["SKEIN_STORE_URL"]
('postgresql+psycopg://u@db:5432/t1_airflow', 'postgresql+psycopg2://u@db:5432/t1_store')
>>> env["AIRFLOW__CELERY__RESULT_BACKEND"]
'db+postgresql+psycopg://u@db:5432/t1_airflow'
>>> [w.queues for w in WORKERS]
['default,skein-eu', 'default,skein-us']
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass

PROFILES = ("embedded", "distributed")
DEFAULT_PROFILE = "embedded"
DEFAULT_QUEUE = "default"
# Region -> Celery queue of the distributed profile's workers. A campaign routes a region's
# consumers there with `fleet.queues: {eu: skein-eu}` (and `skein/region: eu` on the consumers).
REGION_QUEUES = {"eu": "skein-eu", "us": "skein-us"}
# Longer than any task may run (fleet.execution_timeout_minutes defaults to 60): Redis hands an
# unacknowledged message to another worker after this long, and a task still running then
# would be started twice (Airflow refuses the second start, but reports the first one failed).
VISIBILITY_TIMEOUT_S = 2 * 60 * 60


@dataclass(frozen=True)
class Worker:
    name: str  # Celery hostname prefix: <name>@<host>
    region: str
    queues: str  # comma-separated, as `airflow celery worker --queues` takes them
    concurrency: int = 2


# Both serve the default queue too: a campaign without regions uses both, and the tasks of a
# worker that dies run again on the other one.
WORKERS = tuple(Worker(f"worker-{region}", region, f"{DEFAULT_QUEUE},{queue}")
                for region, queue in REGION_QUEUES.items())


@dataclass(frozen=True)
class DistributedServers:
    postgres: str = "postgresql://postgres@127.0.0.1:5432"  # server, no database
    redis: str = "redis://127.0.0.1:6379/0"
    name: str = "skein"  # database names <name>_airflow, <name>_store; Redis key prefix <name>:

    @classmethod
    def from_environment(cls, environ=None) -> DistributedServers:
        environ = os.environ if environ is None else environ
        servers = cls(environ.get("SKEIN_POSTGRES", cls.postgres).rstrip("/"),
                      environ.get("SKEIN_REDIS", cls.redis),
                      environ.get("SKEIN_DISTRIBUTED_NAME", cls.name))
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", servers.name):
            raise ValueError(f"SKEIN_DISTRIBUTED_NAME={servers.name!r}: use lowercase letters, "
                             "digits and underscores (it names databases)")
        if not servers.postgres.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"SKEIN_POSTGRES={servers.postgres!r}: expected postgresql://user@host:port")
        if not servers.redis.startswith(("redis://", "rediss://")):
            raise ValueError(f"SKEIN_REDIS={servers.redis!r}: expected redis://host:port/db")
        return servers

    @property
    def databases(self) -> dict[str, str]:
        return {"airflow": f"{self.name}_airflow", "store": f"{self.name}_store"}

    def url(self, database: str, driver: str) -> str:
        """``postgresql+<driver>://user@host:port/<database>``."""
        return f"postgresql+{driver}://{self.postgres.split('://', 1)[1]}/{database}"

    @property
    def key_prefix(self) -> str:
        return f"{self.name}:"


def distributed_env(servers: DistributedServers) -> dict[str, str]:
    """The Airflow and Skein settings of the distributed profile, as environment variables."""
    metadata = servers.url(servers.databases["airflow"], "psycopg")
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
        "AIRFLOW__CELERY__BROKER_URL": servers.redis,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata}",
        # Late acknowledgement (Airflow's default, said here because the profile relies on it):
        # a worker killed while it runs a task never acknowledged its message.
        "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
        # One message reserved per free process: a dying worker strands no queued backlog.
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        # A pool process killed under a task (out of memory) puts the message back instead of
        # acknowledging it as failed.
        "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps({"task_reject_on_worker_lost": True}),
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
        # Every Redis key of this deployment under one prefix (kombu's global_keyprefix).
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": servers.key_prefix,
        # The audit log and leases, shared by every worker.
        "SKEIN_STORE_URL": servers.url(servers.databases["store"], "psycopg2"),
    }


def local_parallelism(cpus: int | None) -> int:
    """LocalExecutor's worker processes for a machine of ``cpus`` cores.

    Airflow's default (32) keeps 32 forked task runners of ~70 MiB each on a 2-core laptop
    (about 2.2 GiB) where at most a few tasks can make progress at once; Skein's tasks are
    batches that use a core each, so two per core is enough and the rest only costs memory.

    >>> local_parallelism(2), local_parallelism(1), local_parallelism(None), local_parallelism(64)
    (4, 2, 2, 32)
    """
    return max(2, min(32, 2 * (cpus or 1)))


def embedded_env(airflow_home: str, environ=None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home}/airflow.db",
        # A parallelism set by the user wins over the machine's size.
        "AIRFLOW__CORE__PARALLELISM": environ.get("AIRFLOW__CORE__PARALLELISM")
        or str(local_parallelism(os.cpu_count())),
    }


def profile_env(profile: str, airflow_home: str, environ=None) -> dict[str, str]:
    if profile == "embedded":
        return embedded_env(airflow_home, environ)
    if profile == "distributed":
        return distributed_env(DistributedServers.from_environment(environ))
    raise ValueError(f"SKEIN_PROFILE={profile!r}: choose one of {', '.join(PROFILES)}")


def prepare(servers: DistributedServers) -> list[str]:
    """Create the profile's databases where missing; returns those created."""
    import psycopg2

    created = []
    admin = psycopg2.connect(f"{servers.postgres}/postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            for database in servers.databases.values():
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{database}"')
                    created.append(database)
    finally:
        admin.close()
    return created


def worker_args(worker: Worker, pid_file: str | None = None, serve_logs: bool = False) -> list[str]:
    """``airflow`` arguments that start ``worker``. Workers sharing one machine (and its
    ``$AIRFLOW_HOME/logs``, which the api-server reads) need no log server each:
    ``serve_logs=False``; a worker on its own host serves its task logs on port 8793.

    >>> " ".join(worker_args(WORKERS[0]))
    'celery worker --queues default,skein-eu --concurrency 2 --celery-hostname worker-eu@%h --without-mingle --without-gossip --skip-serve-logs'
    """
    args = ["celery", "worker", "--queues", worker.queues, "--concurrency", str(worker.concurrency),
            "--celery-hostname", f"{worker.name}@%h", "--without-mingle", "--without-gossip"]
    if not serve_logs:
        args.append("--skip-serve-logs")
    return args + (["--pid", pid_file] if pid_file else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skein_airflow.profiles", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="print the profile's settings as `export NAME=value` lines")
    env.add_argument("profile", choices=PROFILES)
    env.add_argument("--airflow-home", default=os.environ.get("AIRFLOW_HOME", ".airflow"))
    prep = sub.add_parser("prepare", help="create the distributed profile's databases if missing")
    prep.add_argument("profile", choices=["distributed"])
    sub.add_parser("workers", help="print each worker's name and `airflow` arguments")
    args = parser.parse_args(argv)
    try:
        if args.command == "env":
            for key, value in profile_env(args.profile, args.airflow_home).items():
                print(f"export {key}={shlex.quote(value)}")
        elif args.command == "prepare":
            servers = DistributedServers.from_environment()
            created = prepare(servers)
            print(f"databases {', '.join(servers.databases.values())} on {servers.postgres}: "
                  + (f"created {', '.join(created)}" if created else "present"))
        else:
            for worker in WORKERS:
                print(worker.name, shlex.join(worker_args(worker)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
