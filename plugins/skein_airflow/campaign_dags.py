"""One Airflow DAG per campaign file: the only place Skein campaigns become Airflow objects.

Each task calls one engine step (``skein.pipeline``); the tasks themselves are in
``campaign_tasks``, the approval operator in ``approval``.

Parsing stays cheap and pure: ``load_campaign`` only reads the YAML (no
warehouse, network or DB). The engine's heavy modules are imported inside the
task, not at parse time.

Why two DAG files use this module (``dags/skein_campaigns.py`` and
``dags/skein_campaign_errors.py``): in Airflow 3.3 an import error recorded for
a DAG file marks *every* DAG of that file ``has_import_errors`` and stale
(``dag_processing/collection.py: _update_import_errors``), so those DAGs can be
neither scheduled nor triggered. If the factory file raised for one broken
campaign, every campaign would stop. So the factory skips broken files and the
second file, which defines no DAGs, raises one import error listing them: the UI
shows it under "Dag Import Errors" with file, line and field, and the valid
campaigns keep running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pendulum
from airflow.sdk import DAG

from skein_airflow.campaign_ids import campaign_files, campaigns_dir, dag_id_for

if TYPE_CHECKING:
    from skein.spec import Campaign

log = logging.getLogger(__name__)

DEFAULT_POOL = "skein_default"  # created from airflow_settings.yaml
# Fixed, in the past: with catchup=False only the latest interval is ever scheduled.
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


class CampaignFilesError(Exception):
    """Raised by ``dags/skein_campaign_errors.py`` so Airflow lists broken campaign files."""


@dataclass
class CampaignDags:
    """The DAGs built from a campaigns directory, and the files that could not be used."""

    directory: Path
    dags: dict[str, DAG] = field(default_factory=dict)
    errors: dict[Path, str] = field(default_factory=dict)  # file -> "file:line: field: message"

    def error_report(self) -> str:
        lines = [f"{len(self.errors)} campaign file(s) in {self.directory} are invalid; their "
                 "DAGs are not loaded (the other campaigns are):"]
        for problems in self.errors.values():
            lines += [f"  {p}" for p in problems.splitlines()]
        return "\n".join(lines)


def build_campaign_dags(directory: Path | None = None, build: bool = True) -> CampaignDags:
    """Build a DAG for every valid campaign file; record every invalid one instead of raising.

    Any exception is caught per file (not only ``SkeinError``), so one bad file, or
    an engine bug it triggers, never hides the other campaigns. ``build=False`` only checks
    the files (the error-listing DAG file needs no DAG objects). A task process builds only
    the DAG it runs (Airflow's parsing context names it).
    """
    from airflow.sdk import get_parsing_context

    from skein.campaign_files import load_campaign_files

    only = get_parsing_context().dag_id

    result = CampaignDags(directory=directory or campaigns_dir())
    # Files that do not load, and every file of an id that two files share (whichever was
    # read first would otherwise be the campaign, approvers included), are errors.
    loaded = load_campaign_files(campaign_files(result.directory))
    result.errors.update(loaded.errors)
    for path, campaign in loaded.campaigns.items():
        dag_id = dag_id_for(campaign.campaign)
        if not build or (only is not None and only != dag_id):
            continue
        try:
            result.dags[dag_id] = campaign_dag(campaign)
        except Exception as e:  # noqa: BLE001 - an Airflow limit the spec does not check
            result.errors[path] = f"{path}: cannot build the DAG: {type(e).__name__}: {e}"
    for path, problem in result.errors.items():
        log.warning("Skein campaign file skipped: %s", problem)
    return result


def campaign_dag(campaign: Campaign, executors: str | None = None) -> DAG:
    """The Airflow DAG of one campaign: every task calls one engine step (``skein.pipeline``).

    discover -> agents (mapped) -> simulate (mapped) -> summarize -> approval -> per wave:
    [approval] -> start -> apply (mapped, one task per region/tier group) -> [soak] -> monitor
    -> ... -> rollback (runs only if a wave failed) -> finalize.

    Flow control lives in the campaign store, not in branch operators: each wave task asks
    the store whether its wave runs (approved, selected, nothing failed before), so a rerun
    or a retried task decides exactly as the first attempt did.

    ``executors`` is ``[core] executor`` (default: this Airflow's): it decides whether the
    tasks get the campaign's pod override (``skein_airflow.kubernetes``).
    """
    from datetime import timedelta

    from airflow.sdk import Param

    from skein.rollout import apply_groups, group_settings
    from skein_airflow import campaign_tasks as t
    from skein_airflow.approval import CampaignApproval
    from skein_airflow.kubernetes import configured_executors, executor_settings

    fleet = campaign.fleet
    file = str(campaign.path)
    doc = campaign.description or campaign.title
    doc += (f"\n\n---\nCampaign `{campaign.campaign}`: `{campaign.source}` -> `{campaign.target}`, "
            f"from `{campaign.path}`. Waves: "
            + ", ".join(f"{w.name} ({w.share:.0%})" for w in campaign.rollout.waves)
            + f". Approvers: {', '.join(campaign.rollout.approvers) or 'anyone'}. "
            "Approve in Browse -> Required Actions. `skein audit "
            f"{campaign.campaign}` prints the audit log.")
    wave_names = [w.name for w in campaign.rollout.waves]
    dag = DAG(
        dag_id=dag_id_for(campaign.campaign),
        description=campaign.title,
        doc_md=doc,
        schedule=campaign.rollout.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        # The spec has no tags field: tag what a reader filters by.
        tags=["skein", f"source:{campaign.source}"],
        default_args={
            "owner": ",".join(campaign.owners),
            "retries": fleet.retries,
            "retry_delay": timedelta(seconds=fleet.retry_delay_s),
            "retry_exponential_backoff": True,
            "execution_timeout": timedelta(minutes=fleet.execution_timeout_minutes),
            "pool": fleet.pool,
            # executor (fleet.executor) and the pod override of the campaign's quota
            **executor_settings(campaign, executors if executors is not None else configured_executors()),
        },
        params={
            "dry_run": Param(False, type="boolean", description="Plan and simulate only."),
            "waves": Param(wave_names, type="array", description="Waves to run this time.",
                           examples=wave_names),
            "error_threshold": Param(None, type=["null", "number"], minimum=0, maximum=1,
                                     description="Override the campaign's error threshold."),
            "consumers": Param(None, type=["null", "string"],
                               description="Only consumers whose id matches this glob "
                                           "(and the upstream they read)."),
        },
        # Built here, published by the DAG file: never register into whichever
        # module happens to be importing this one.
        auto_register=False,
    )
    with dag:
        batches = t.discover.override(pool=DEFAULT_POOL)(file)
        agents = t.agents.partial(campaign_file=file).expand(ids=batches)
        simulated = t.simulate.partial(campaign_file=file).expand(ids=batches)
        agents >> simulated
        summary = t.summarize(file)
        simulated >> summary
        approval = CampaignApproval(task_id="approval", campaign_file=file,
                                    approvers=campaign.rollout.approvers, wave=None)
        summary >> approval
        previous = approval
        for number, wave in enumerate(campaign.rollout.waves):
            key = t.wave_key(wave.name)
            if number and campaign.rollout.approve_each_wave:
                ask = CampaignApproval(task_id=f"approve_{key}", campaign_file=file,
                                       approvers=campaign.rollout.approvers, wave=wave.name,
                                       trigger_rule="none_failed")
                previous >> ask
                previous = ask
            groups = apply_groups(fleet)
            start = t.start_wave.override(task_id=f"start_{key}")(
                file, wave.name, groups[0] if len(groups) == 1 else None)
            previous >> start
            appliers = []
            for group in groups:
                queue, weight = group_settings(group, fleet)
                extra = {"queue": queue} if queue else {}
                ids = start if len(groups) == 1 else t.select_batches.override(
                    task_id=f"batches_{key}__{group}")(file, wave.name, group)
                if len(groups) > 1:
                    start >> ids
                applier = t.apply.override(
                    task_id=f"apply_{key}__{group}", priority_weight=weight, **extra,
                ).partial(campaign_file=file, wave=wave.name).expand(ids=ids)
                appliers.append(applier)
            after = appliers
            if wave.soak_minutes:
                soak = t.soak.override(task_id=f"soak_{key}")(file, wave.name, wave.soak_minutes)
                after >> soak
                after = [soak]
            monitor = t.monitor.override(task_id=f"monitor_{key}")(file, wave.name)
            after >> monitor
            previous = monitor
        rollback = t.rollback(file)
        previous >> rollback
        finished = t.finalize.override(outlets=[t.consumers_alias(campaign.campaign)])(file)
        rollback >> finished
    return dag
