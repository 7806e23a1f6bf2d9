"""plugins/skein_airflow/profiles.py: the settings of the embedded and distributed profiles,
and the command line scripts/run.sh reads them with (no servers needed)."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import pytest

from celery_env import ROOT
from skein_airflow import kubernetes, profiles
from skein_airflow.profiles import DistributedServers, distributed_env, profile_env


@pytest.mark.parametrize("module", [profiles, kubernetes], ids=lambda m: m.__name__)
def test_doctests(module):
    # plugins/ is not among pytest's doctest paths (pyproject.toml): run its examples here.
    result = doctest.testmod(module)
    assert result.attempted and not result.failed


def test_embedded_is_sqlite_and_local_sized_for_the_machine():
    assert profile_env("embedded", "/h", {}) == {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////h/airflow.db",
        "AIRFLOW__CORE__PARALLELISM": str(max(2, min(32, 2 * os.cpu_count())))}
    # Airflow's default of 32 worker processes is not what `make run` starts on a small machine.
    if os.cpu_count() <= 4:
        assert int(profile_env("embedded", "/h", {})["AIRFLOW__CORE__PARALLELISM"]) <= 8


def test_a_parallelism_the_user_set_wins():
    env = profile_env("embedded", "/h", {"AIRFLOW__CORE__PARALLELISM": "12"})
    assert env["AIRFLOW__CORE__PARALLELISM"] == "12"


def test_distributed_from_the_environment():
    env = profile_env("distributed", "/h", {"SKEIN_POSTGRES": "postgresql://u:p@db:6543/",
                                            "SKEIN_REDIS": "redis://r:6380/3", "SKEIN_DISTRIBUTED_NAME": "prod"})
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg://u:p@db:6543/prod_airflow"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg://u:p@db:6543/prod_airflow"
    assert env["SKEIN_STORE_URL"] == "postgresql+psycopg2://u:p@db:6543/prod_store"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://r:6380/3"
    assert env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"] == "prod:"
    assert env["AIRFLOW__CELERY__TASK_ACKS_LATE"] == "True"
    assert profile_env("distributed", "/h", {}) == distributed_env(DistributedServers())


@pytest.mark.parametrize("environ,message", [
    ({"SKEIN_DISTRIBUTED_NAME": "Prod-1"}, "SKEIN_DISTRIBUTED_NAME='Prod-1': use lowercase"),
    ({"SKEIN_POSTGRES": "mysql://db"}, "SKEIN_POSTGRES='mysql://db': expected postgresql://"),
    ({"SKEIN_REDIS": "amqp://mq"}, "SKEIN_REDIS='amqp://mq': expected redis://"),
])
def test_bad_settings_are_refused(environ, message):
    with pytest.raises(ValueError, match=message):
        profile_env("distributed", "/h", environ)
    with pytest.raises(ValueError, match="choose one of embedded, distributed"):
        profile_env("cluster", "/h")


def test_the_shell_reads_exactly_the_profile():
    """`python -m skein_airflow.profiles env distributed`, evaluated by bash, sets the profile."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SKEIN_"))},
           "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")]),
           "SKEIN_DISTRIBUTED_NAME": "shell_test"}
    script = (f'out=$("{sys.executable}" -m skein_airflow.profiles env distributed) && eval "$out" '
              f'&& env -0')
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, check=True)
    seen = dict(item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item)
    expected = distributed_env(DistributedServers(name="shell_test"))
    assert {k: seen[k] for k in expected} == expected
    bad = subprocess.run([sys.executable, "-m", "skein_airflow.profiles", "env", "distributed"],
                         env={**env, "SKEIN_DISTRIBUTED_NAME": "x;rm"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "SKEIN_DISTRIBUTED_NAME" in bad.stderr and not bad.stdout
