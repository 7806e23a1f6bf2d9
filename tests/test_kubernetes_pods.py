"""The campaign's quota as a KubernetesExecutor pod override (plugins/skein_airflow/kubernetes.py).

The pod is checked through the kubernetes client's own models: serialised with
``ApiClient().sanitize_for_serialization`` (what the executor sends to the API server),
deserialised back into a ``V1Pod``, and its quantities parsed by ``kubernetes.utils.parse_quantity``.
Then real DAGs, built by Airflow's DagBag under each ``[core] executor`` setting, carry the
override exactly where the task runs on the KubernetesExecutor, and it survives Airflow's DAG
serialisation (what the scheduler and the executor read back).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s
from kubernetes.utils import parse_quantity

from skein.errors import SpecErrors
from skein.spec import CPU_QUANTITY, MEMORY_QUANTITY, MIN_TASK_MEMORY, Resources, load_campaign

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
from skein_airflow.kubernetes import (  # noqa: E402
    UnknownExecutor, executor_settings, pod_override, runs_on_kubernetes)

CAMPAIGN = """\
campaign: quota-{name}
title: Quota
owners: [data-platform]
warehouse: duckdb:///wh.duckdb
source: analytics.plays
target: analytics_v2.plays
columns: {{user_id: account_id}}
rollout: {{schedule: null}}
fleet:
{fleet}
"""


def campaign_file(directory: Path, name: str, fleet: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(CAMPAIGN.format(name=name, fleet=textwrap.indent(textwrap.dedent(fleet).strip(), "  ")))
    return path


class Response:
    """What ``ApiClient.deserialize`` reads: an HTTP response's body."""

    def __init__(self, body: dict):
        self.data = json.dumps(body)


def test_pod_override_is_the_campaign_quota(tmp_path):
    campaign = load_campaign(campaign_file(tmp_path, "a", "resources: {cpu: 1500m, memory: 3Gi}"))
    pod = pod_override(campaign)
    api = ApiClient()
    body = api.sanitize_for_serialization(pod)
    quota = {"cpu": "1500m", "memory": "3Gi"}
    assert body == {
        "metadata": {"annotations": {"skein/campaign": "quota-a"}},
        "spec": {"containers": [{"name": "base", "resources": {"requests": quota, "limits": quota}}]},
    }
    # The API server's view of it, read back through the client's models.
    again = api.deserialize(Response(body), "V1Pod")
    assert isinstance(again, k8s.V1Pod) and again == pod
    container = again.spec.containers[0]
    assert container.name == "base"  # the container Airflow's pod template runs the task in
    assert container.resources.requests == container.resources.limits  # Guaranteed QoS
    assert parse_quantity(container.resources.limits["cpu"]) == Decimal("1.5")
    assert parse_quantity(container.resources.limits["memory"]) == 3 * 2**30


@settings(max_examples=200, deadline=None)
@given(cpu=st.from_regex(CPU_QUANTITY, fullmatch=True), memory=st.from_regex(MEMORY_QUANTITY, fullmatch=True))
def test_every_quantity_the_spec_accepts_kubernetes_parses(cpu, memory):
    try:
        quota = Resources(cpu=cpu, memory=memory)
    except ValueError:  # zero CPU, or below 256Mi: refused by the spec, not our concern here
        return
    assert parse_quantity(quota.cpu) > 0
    assert parse_quantity(quota.memory) >= MIN_TASK_MEMORY


@pytest.mark.parametrize("fleet,message", [
    ("resources: {cpu: lots, memory: 1Gi}", "fleet.resources.cpu: 'lots' is not a CPU quantity"),
    ("resources: {cpu: 0m, memory: 1Gi}", "fleet.resources.cpu: must be more than 0"),
    ("resources: {cpu: 1, memory: 1GB}", "fleet.resources.memory: '1GB' is not a memory quantity"),
    ("resources: {cpu: 1, memory: 100Mi}", "fleet.resources.memory: '100Mi' is below 256Mi"),
    ("resources: {cpu: 1}", "fleet.resources.memory: required field is missing"),
    ("resources: {cpu: 1, memory: 1Gi, gpu: 1}", "fleet.resources.gpu: unknown field"),
    ("executor: Kubernetes Executor", "fleet.executor: 'Kubernetes Executor' is not an executor name"),
])
def test_bad_fleet_settings_name_file_line_and_field(tmp_path, fleet, message):
    path = campaign_file(tmp_path, "bad", fleet)
    with pytest.raises(SpecErrors) as caught:
        load_campaign(path)
    assert f"{path}:10: {message}" in str(caught.value)


@pytest.mark.parametrize("configured,executor,on_kubernetes", [
    ("KubernetesExecutor", None, True),
    ("CeleryExecutor,KubernetesExecutor", "KubernetesExecutor", True),
    ("CeleryExecutor,KubernetesExecutor", None, False),
    ("KubernetesExecutor,CeleryExecutor", "CeleryExecutor", False),
    ("CeleryExecutor", None, False),
    ("LocalExecutor", None, False),
    ("k8s:airflow.providers.cncf.kubernetes.executors.kubernetes_executor.KubernetesExecutor", None, True),
    ("CeleryExecutor,k8s:airflow.providers.cncf.kubernetes.executors.kubernetes_executor.KubernetesExecutor",
     "k8s", True),  # an alias
])
def test_which_executor_gets_the_pod(tmp_path, configured, executor, on_kubernetes):
    fleet = "resources: {cpu: 500m, memory: 1Gi}" + (f"\nexecutor: {executor}" if executor else "")
    campaign = load_campaign(campaign_file(tmp_path, "x", fleet))
    assert runs_on_kubernetes(configured, campaign.fleet) is on_kubernetes
    settings = executor_settings(campaign, configured)
    assert settings.get("executor") == executor
    assert ("executor_config" in settings) is on_kubernetes
    if on_kubernetes:
        assert settings["executor_config"]["pod_override"] == pod_override(campaign)


def test_no_quota_no_pod(tmp_path):
    campaign = load_campaign(campaign_file(tmp_path, "free", "retries: 1"))
    assert executor_settings(campaign, "KubernetesExecutor") == {}


def test_an_executor_airflow_does_not_run_is_refused_for_that_campaign(tmp_path):
    path = campaign_file(tmp_path, "elsewhere", "executor: KubernetesExecutor")
    with pytest.raises(UnknownExecutor) as caught:
        executor_settings(load_campaign(path), "CeleryExecutor")
    assert str(caught.value).startswith(f"{path}:10: fleet.executor: 'KubernetesExecutor' is not "
                                        "configured in this Airflow ([core] executor = CeleryExecutor)")


# ---- real DAGs through Airflow's DagBag, per [core] executor -------------------------------

PROBE = textwrap.dedent("""
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
    from kubernetes.client import ApiClient

    bag = DagBag(dag_folder=sys.argv[1])
    out = {"errors": {k.rsplit("/", 1)[-1]: v for k, v in bag.import_errors.items()}, "dags": {}}
    api = ApiClient()
    for dag_id, dag in bag.dags.items():
        # What the scheduler and the executor see: the DAG after Airflow's serialisation.
        again = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        tasks = {}
        for task in again.tasks:
            pod = (task.executor_config or {}).get("pod_override")
            tasks[task.task_id] = {"executor": task.executor, "pod": api.sanitize_for_serialization(pod)
                                   if pod is not None else None, "pod_type": type(pod).__name__}
        out["dags"][dag_id] = tasks
    print("DAGBAG " + json.dumps(out))
""")


def dagbag(tmp: Path, campaigns: Path, executor: str) -> dict:
    env = {**os.environ,
           "AIRFLOW_HOME": str(tmp / f"home-{abs(hash(executor))}"),
           "AIRFLOW__CORE__EXECUTOR": executor,
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "SKEIN_CAMPAIGNS_DIR": str(campaigns),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")])}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("DAGBAG "))[7:])


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory):
    directory = tmp_path_factory.mktemp("campaigns")
    campaign_file(directory, "k8s", "resources: {cpu: 2, memory: 4Gi}\nexecutor: KubernetesExecutor")
    campaign_file(directory, "default", "resources: {cpu: 250m, memory: 512Mi}")
    campaign_file(directory, "unlimited", "retries: 1")
    return directory


QUOTA_K8S = {"cpu": "2", "memory": "4Gi"}
QUOTA_DEFAULT = {"cpu": "250m", "memory": "512Mi"}


def pod(campaign: str, quota: dict) -> dict:
    return {"metadata": {"annotations": {"skein/campaign": campaign}},
            "spec": {"containers": [{"name": "base", "resources": {"requests": quota, "limits": quota}}]}}


def test_multi_executor_celery_first(tmp_path, campaigns):
    """``CeleryExecutor,KubernetesExecutor``: only the campaign that asks for the
    KubernetesExecutor runs there, with its pod; the others stay on Celery, with none."""
    bag = dagbag(tmp_path, campaigns, "CeleryExecutor,KubernetesExecutor")
    assert bag["errors"] == {}
    k8s_tasks = bag["dags"]["skein__quota-k8s"]
    assert {"discover", "agents", "simulate", "approval", "apply_canary__default", "finalize"} <= set(k8s_tasks)
    for task_id, task in k8s_tasks.items():
        assert task["executor"] == "KubernetesExecutor", task_id
        assert task["pod_type"] == "V1Pod" and task["pod"] == pod("quota-k8s", QUOTA_K8S), task_id
    for dag_id in ("skein__quota-default", "skein__quota-unlimited"):
        assert all(t == {"executor": None, "pod": None, "pod_type": "NoneType"}
                   for t in bag["dags"][dag_id].values()), dag_id


def test_kubernetes_executor_alone(tmp_path, campaigns):
    """``KubernetesExecutor``: every campaign with a quota gets its own pod."""
    bag = dagbag(tmp_path, campaigns, "KubernetesExecutor")
    assert bag["errors"] == {}
    assert all(t["pod"] == pod("quota-k8s", QUOTA_K8S) for t in bag["dags"]["skein__quota-k8s"].values())
    assert all(t["pod"] == pod("quota-default", QUOTA_DEFAULT) and t["executor"] is None
               for t in bag["dags"]["skein__quota-default"].values())
    assert all(t["pod"] is None for t in bag["dags"]["skein__quota-unlimited"].values())


def test_celery_alone_skips_only_the_campaign_asking_for_kubernetes(tmp_path, campaigns):
    """``CeleryExecutor``: the campaign naming the KubernetesExecutor is not built (its error
    is logged), and the others load: Airflow would have refused the whole DAG file."""
    bag = dagbag(tmp_path, campaigns, "CeleryExecutor")
    assert bag["errors"] == {}
    assert set(bag["dags"]) == {"skein__quota-default", "skein__quota-unlimited"}
    assert all(t["pod"] is None for d in bag["dags"].values() for t in d.values())
