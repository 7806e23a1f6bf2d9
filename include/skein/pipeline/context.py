"""One run of one campaign: the spec, the run directory, the campaign store, who acts.

Steps hold no state of their own: everything a step needs from an earlier one comes from
the run directory (``skein.rundir``) or the store, so any step can be retried and a run
killed half way continues where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skein.audit import Action
from skein.errors import SkeinError
from skein.catalog import Catalog
from skein.discovery import DiscoveryReport
from skein.paths import run_folder
from skein.rewrite.request import Escalation, Patch
from skein.rundir import RunDirectory
from skein.spec import Campaign, load_campaign
from skein.store import CampaignStore, skein_home


log = logging.getLogger("skein.pipeline")

# (step, consumers done, consumers in the step, consumer now) -> None
Progress = Callable[[str, int, int, "str | None"], None]


def log_progress(step: str, done: int, total: int, consumer: str | None) -> None:
    """The default: one log line per consumer (in Airflow: the task's log)."""
    log.info("%s %d/%d%s", step, done + 1 if consumer else done, total,
             f": {consumer}" if consumer else "")


class RunBusy(SkeinError):
    """Another run holds the campaign (or the consumer) this run wants to change."""


@dataclass
class RunContext:
    """``actor`` names who acts in the audit log (``task:<task id>``, ``user:<id>``, ``cli``).
    ``store`` is None for ``skein plan``, which previews and changes nothing: it audits nothing."""

    campaign: Campaign
    run_id: str
    store: CampaignStore | None
    files: RunDirectory
    actor: str = "cli"
    # The CLI runs a campaign in one process: its leases die with it. Airflow's tasks are
    # many processes of one run: the run id alone holds them.
    one_process: bool = False
    progress: Progress = log_progress
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def directory(self) -> Path:
        return self.files.path

    @property
    def campaign_id(self) -> str:
        return self.campaign.campaign

    def record(self, action: Action, **kwargs) -> int:
        if self.store is None:
            return 0
        return self.store.record(self.campaign_id, self.run_id, self.actor, action, **kwargs)

    def record_start(self, *, dry_run: bool, waves: list[str] | None, error_threshold: float | None,
                     consumer_filter: str | None) -> None:
        """The run's first audit event, with what the trigger chose."""
        self.record(Action.RUN_STARTED, dry_run=dry_run, waves=waves, error_threshold=error_threshold,
                    filter=consumer_filter)

    @property
    def holder(self) -> str:
        return f"{self.campaign_id}/{self.run_id}"

    def lease(self, name: str, ttl_s: float | None = None):
        """Take the store lease ``name`` for this run; returns the lease in the way, or None."""
        import os

        if self.store is None:
            return None
        return self.store.acquire(name, self.holder, pid=os.getpid() if self.one_process else None,
                                  ttl_s=ttl_s)

    def claim_run(self) -> None:
        """Refuse to go on while another run of this campaign holds it (from the CLI, Airflow
        or both): two runs would count each other's writes as their own."""
        other = self.lease(f"run:{self.campaign_id}")
        if other is not None:
            raise RunBusy(f"campaign {self.campaign_id} is being run by {other.describe()}: "
                          f"wait for that run to finish (a run that died is taken over once its "
                          f"process is gone; `skein unlock {self.campaign_id}` frees it by hand)")

    def release_run(self) -> None:
        if self.store is not None:
            self.store.release(f"run:{self.campaign_id}", self.holder)

    def events(self, *actions: Action, consumer: str | None = None) -> list:
        """This run's audit events (of these actions), oldest first."""
        if self.store is None:
            return []
        return self.store.events(self.campaign_id, self.run_id, consumer=consumer,
                                 actions=actions or None)

    # --- frozen data of earlier steps, read once per process ---------------------------
    def catalog(self) -> Catalog:
        if "catalog" not in self._cache:
            self._cache["catalog"] = self.files.catalog()
        return self._cache["catalog"]

    def report(self) -> DiscoveryReport:
        if "report" not in self._cache:
            self._cache["report"] = self.files.report()
        return self._cache["report"]

    def consumer_ids(self) -> list[str]:
        return [c.id for c in self.report().consumers]

    def results(self) -> dict[str, Patch | Escalation]:
        return self.files.results(self.consumer_ids())

    def simulations(self) -> dict:
        return self.files.simulations(self.consumer_ids())

    def forget(self) -> None:
        """Drop what was read (the discover step just wrote new files)."""
        self._cache.clear()


def run_directory(campaign_id: str, run_id: str, home: Path | None = None) -> Path:
    """``<home>/runs/<campaign>/<run id>``, the run id made safe as a folder name."""
    return (home or skein_home()) / "runs" / campaign_id / run_folder(run_id)


def start_run(campaign_file: str | Path, run_id: str, *, store: CampaignStore | None = None,
              home: Path | None = None, actor: str = "cli", one_process: bool = False) -> RunContext:
    """Open (or reopen, after a crash) the run; the first start keeps a copy of the spec.
    ``one_process``: the whole run happens in this process (``skein run``)."""
    campaign = load_campaign(campaign_file)
    files = RunDirectory(run_directory(campaign.campaign, run_id, home))
    files.freeze_campaign(campaign.path)
    return RunContext(campaign=campaign, run_id=run_id, store=store or CampaignStore(),
                      files=files, actor=actor, one_process=one_process)


def open_plan(campaign: Campaign, out: str | Path) -> RunContext:
    """The context of ``skein plan``: the run directory is ``out``, nothing is audited."""
    files = RunDirectory(Path(out))
    files.freeze_campaign(campaign.path)
    return RunContext(campaign=campaign, run_id="plan", store=None, files=files, actor="cli")
