"""The campaign's quota as a Kubernetes pod: ``executor_config={"pod_override": V1Pod}``.

Under the KubernetesExecutor every task instance is a pod built from the deployment's pod
template; a task's ``pod_override`` is merged into it. Skein's override names the template's
``base`` container (the one the executor runs the task in) and sets its CPU and memory
requests and limits to the campaign's ``fleet.resources``: equal requests and limits, so a
campaign gets exactly its quota (Kubernetes' Guaranteed class) and one campaign's heavy
simulation cannot starve another's. An annotation names the campaign, for ``kubectl``.

It applies when the task runs on the KubernetesExecutor: the first configured executor
(``[core] executor = KubernetesExecutor``) for tasks that name none, or ``fleet.executor:
KubernetesExecutor`` in a multi-executor setup (``CeleryExecutor,KubernetesExecutor``). Other
executors get no ``executor_config`` (CeleryExecutor and LocalExecutor ignore it anyway).

>>> from skein.spec import Fleet, Resources
>>> fleet = Fleet(resources=Resources(cpu="500m", memory="1Gi"), executor="KubernetesExecutor")
>>> runs_on_kubernetes("CeleryExecutor,KubernetesExecutor", fleet)
True
>>> runs_on_kubernetes("CeleryExecutor,KubernetesExecutor", Fleet())
False
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

    from skein.spec import Campaign, Fleet

KUBERNETES_EXECUTOR = "KubernetesExecutor"
# Where Airflow's KubernetesExecutor runs the task (pod_generator.py: the container named "base").
BASE_CONTAINER = "base"
CAMPAIGN_ANNOTATION = "skein/campaign"


def _executors(configured: str) -> list[tuple[set[str], str]]:
    """Each entry of ``[core] executor``: every name it answers to (as written, its alias, its
    class path, its class name) and its class name.

    >>> names, name = _executors("CeleryExecutor, k8s:my.pkg.KubernetesExecutor")[1]; sorted(names), name
    (['KubernetesExecutor', 'k8s', 'k8s:my.pkg.KubernetesExecutor', 'my.pkg.KubernetesExecutor'], 'KubernetesExecutor')
    """
    out = []
    for entry in filter(None, (e.strip() for e in configured.split(","))):
        alias, _, path = entry.rpartition(":")
        name = path.rsplit(".", 1)[-1]
        out.append(({entry, path, name} | ({alias} if alias else set()), name))
    return out


def _class_name(executor: str, configured: str) -> str:
    return next((name for names, name in _executors(configured) if executor in names),
                executor.rpartition(":")[2].rsplit(".", 1)[-1])


def runs_on_kubernetes(configured: str, fleet: Fleet) -> bool:
    """Whether the campaign's tasks run on the KubernetesExecutor, given ``[core] executor``.

    >>> from skein.spec import Fleet
    >>> runs_on_kubernetes("KubernetesExecutor", Fleet()), runs_on_kubernetes("LocalExecutor", Fleet())
    (True, False)
    >>> runs_on_kubernetes("airflow.providers.cncf.kubernetes.executors.kubernetes_executor.KubernetesExecutor", Fleet())
    True
    """
    chosen = fleet.executor or configured.split(",")[0].strip()
    return _class_name(chosen, configured) == KUBERNETES_EXECUTOR


def pod_override(campaign: Campaign) -> k8s.V1Pod:
    """The pod override giving the campaign's tasks exactly ``fleet.resources``."""
    from kubernetes.client import models as k8s

    quota = campaign.fleet.resources
    amounts = {"cpu": quota.cpu, "memory": quota.memory}
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(annotations={CAMPAIGN_ANNOTATION: campaign.campaign}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(
            name=BASE_CONTAINER,
            resources=k8s.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts)),
        )]),
    )


class UnknownExecutor(ValueError):
    """``fleet.executor`` names an executor this Airflow does not run."""


def executor_settings(campaign: Campaign, configured: str) -> dict:
    """Task arguments (``default_args``) of the campaign for the executors ``configured``:
    ``executor`` when the campaign names one, ``executor_config`` with the pod override when
    its tasks run on the KubernetesExecutor and it has a quota.

    A ``fleet.executor`` that is not configured is refused here, for this campaign alone:
    Airflow would refuse the DAG file, and with it every campaign's DAG."""
    fleet = campaign.fleet
    out: dict = {}
    if fleet.executor:
        if not any(fleet.executor in names for names, _ in _executors(configured)):
            raise UnknownExecutor(
                f"{campaign.path}:{campaign.line_of('fleet', 'executor') or 1}: fleet.executor: "
                f"{fleet.executor!r} is not configured in this Airflow ([core] executor = "
                f"{configured}); add it there or remove fleet.executor")
        out["executor"] = fleet.executor
    if fleet.resources is not None and runs_on_kubernetes(configured, fleet):
        out["executor_config"] = {"pod_override": pod_override(campaign)}
    return out


def configured_executors() -> str:
    """``[core] executor`` of this Airflow (read from its configuration: no database)."""
    from airflow.sdk import conf

    return conf.get("core", "executor")
