"""One Airflow DAG per campaign file: the only place Skein campaigns become Airflow objects.

For now each DAG is discovery-only: one ``discover`` task runs the engine's
``discover()`` and writes the report under
``$AIRFLOW_HOME/skein/<campaign>/<run_id>/discovery.json``. Agents, approval and
waves come later and will be rendered here too.

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

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG, get_current_context, task

if TYPE_CHECKING:
    from skein.spec import Campaign

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]
DAG_ID_PREFIX = "skein__"
DEFAULT_POOL = "skein_default"  # created from airflow_settings.yaml
# Fixed, in the past: with catchup=False only the latest interval is ever scheduled.
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def campaigns_dir() -> Path:
    """``$SKEIN_CAMPAIGNS_DIR``, else the demo fleet's campaigns inside the project.

    An environment variable rather than an Airflow Variable: reading a Variable at
    parse time is a DB (or API) call in every parse of every DAG file.
    """
    configured = os.environ.get("SKEIN_CAMPAIGNS_DIR")
    return Path(configured) if configured else PROJECT_DIR / ".skein" / "demo" / "campaigns"


def campaign_files(directory: Path) -> list[Path]:
    """Campaign files directly in ``directory`` (``*.yaml``, ``*.yml``), sorted."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file())


def dag_id_for(campaign_id: str) -> str:
    return DAG_ID_PREFIX + campaign_id


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


def build_campaign_dags(directory: Path | None = None) -> CampaignDags:
    """Build a DAG for every valid campaign file; record every invalid one instead of raising.

    Any exception is caught per file (not only ``SkeinError``), so one bad file, or
    an engine bug it triggers, never hides the other campaigns.
    """
    from skein.spec import load_campaign

    result = CampaignDags(directory=directory or campaigns_dir())
    sources: dict[str, Path] = {}
    for path in campaign_files(result.directory):
        try:
            campaign = load_campaign(path)
        except Exception as e:  # noqa: BLE001 - reported, per file
            result.errors[path] = _describe(e, path)
            continue
        dag_id = dag_id_for(campaign.campaign)
        if dag_id in sources:
            line = campaign.line_of("campaign") or 1
            result.errors[path] = (f"{path}:{line}: campaign: id {campaign.campaign!r} is already "
                                   f"used by {sources[dag_id]}")
            continue
        try:
            result.dags[dag_id] = campaign_dag(campaign)
        except Exception as e:  # noqa: BLE001 - an Airflow limit the spec does not check
            result.errors[path] = f"{path}: cannot build the DAG: {type(e).__name__}: {e}"
            continue
        sources[dag_id] = path
    for path, problem in result.errors.items():
        log.warning("Skein campaign file skipped: %s", problem)
    return result


def _describe(error: Exception, path: Path) -> str:
    from skein.errors import SkeinError

    if isinstance(error, SkeinError):  # already "file:line: field: message"
        return str(error)
    return f"{path}: {type(error).__name__}: {error}"


def campaign_dag(campaign: Campaign) -> DAG:
    """The Airflow DAG for one campaign (discovery only, for now)."""
    doc = campaign.description or campaign.title
    doc += (f"\n\n---\nCampaign `{campaign.campaign}`: `{campaign.source}` -> `{campaign.target}`, "
            f"from `{campaign.path}`.\nThis DAG runs discovery only; agents, approval and waves "
            "come later.")
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
        default_args={"owner": ",".join(campaign.owners)},
        # Built here, published by the DAG file: never register into whichever
        # module happens to be importing this one.
        auto_register=False,
    )
    with dag:
        discover_consumers(str(campaign.path))
    return dag


@task(task_id="discover", pool=DEFAULT_POOL)
def discover_consumers(campaign_file: str) -> dict[str, int]:
    """Run discovery, write the full report as JSON, return the counts per status (XCom)."""
    from airflow.sdk.exceptions import AirflowFailException
    from skein.discovery import discover, render_text
    from skein.errors import SkeinError
    from skein.spec import load_campaign

    run_id = get_current_context()["run_id"]
    try:
        campaign = load_campaign(campaign_file)
        report = discover(campaign)
    except SkeinError as e:  # a user error: retrying will not help
        raise AirflowFailException(str(e)) from e
    out = report_path(campaign.campaign, run_id)
    _write_json(out, report.model_dump(mode="json"))
    log.info("Discovery for %s:\n%s", campaign.campaign, render_text(report))
    log.info("Report written to %s", out)
    return dict(report.counts)


def report_path(campaign_id: str, run_id: str) -> Path:
    """``$AIRFLOW_HOME/skein/<campaign>/<run_id>/discovery.json`` (Airflow's default home)."""
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return home / "skein" / campaign_id / run_id / "discovery.json"


def _write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
