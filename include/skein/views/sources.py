"""Where the portal's read models read from: the campaign store, Skein's home (run
directories) and the campaign files; and the runs of a campaign, from its audit log.

>>> from skein.store import CampaignStore
>>> store = CampaignStore("sqlite://")
>>> _ = store.record("demo", "r1", "cli", "run_started")
>>> src = Sources(store=store, home=Path("/nonexistent"))
>>> campaign_ids(src), [r.run_id for r in runs(store, "demo")]
(['demo'], ['r1'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from pydantic import BaseModel

from skein.audit import Action
from skein.spec import Campaign
from skein.store import CampaignStore, audit


@dataclass(frozen=True)
class Sources:
    """``campaign_files``: the campaign files the front end serves (Airflow: the DAGs' files);
    a campaign with runs but no file is still listed, from its runs' frozen copy."""

    store: CampaignStore
    home: Path
    campaign_files: tuple[Path, ...] = field(default_factory=tuple)


class RunInfo(BaseModel):
    """One run of a campaign, from its audit events."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str | None = None  # finalize's RunStatus, once finished
    dry_run: bool = False


def campaign_ids(src: Sources) -> list[str]:
    """Every campaign with a file or an audit log, sorted."""
    with src.store.engine.connect() as conn:
        logged = set(conn.execute(sa.select(audit.c.campaign).distinct()).scalars())
    return sorted(logged | set(_specs_by_id(src.campaign_files)))


def campaign_spec(src: Sources, campaign_id: str) -> Campaign | None:
    """The campaign's file as served now, else the copy its latest run froze, else None."""
    path = _specs_by_id(src.campaign_files).get(campaign_id)
    if path is None:
        latest = runs(src.store, campaign_id)
        frozen = run_dir(src, campaign_id, latest[-1].run_id) / "campaign.yaml" if latest else None
        path = frozen if frozen is not None and frozen.is_file() else None
    return _load(path, path.stat().st_mtime_ns) if path is not None else None


def runs(store: CampaignStore, campaign_id: str) -> list[RunInfo]:
    """The campaign's runs, oldest first (a reopened run is listed once)."""
    found: dict[str, RunInfo] = {}
    for event in store.events(campaign_id, actions=(Action.RUN_STARTED, Action.FINISHED)):
        if event.action == Action.RUN_STARTED:
            found.setdefault(event.run_id, RunInfo(run_id=event.run_id, started_at=event.at,
                                                   dry_run=bool(event.detail.get("dry_run"))))
        elif event.run_id in found:
            found[event.run_id] = found[event.run_id].model_copy(
                update={"finished_at": event.at, "status": event.detail.get("status")})
    return list(found.values())


def run_dir(src: Sources, campaign_id: str, run_id: str) -> Path:
    from skein.pipeline.context import run_directory

    return run_directory(campaign_id, run_id, src.home)


def _specs_by_id(files: tuple[Path, ...]) -> dict[str, Path]:
    """Each campaign id's file; an id that several files have is served by none of them (the
    DAG factory builds no DAG for it either: ``skein.campaign_files``)."""
    from skein.campaign_files import duplicate_ids

    specs = {}
    for path in files:
        try:
            spec = _load(path, path.stat().st_mtime_ns)
        except OSError:
            continue
        if spec is not None:
            specs[path] = spec
    shared = duplicate_ids(specs)
    return {spec.campaign: path for path, spec in specs.items() if path not in shared}


@lru_cache(maxsize=256)
def _load(path: Path, mtime_ns: int) -> Campaign | None:
    """A campaign file, parsed once per version (``mtime_ns`` is the cache key); None when it
    is invalid (Airflow lists it under Dag Import Errors)."""
    from skein.errors import SkeinError
    from skein.spec import load_campaign

    try:
        return load_campaign(path)
    except (SkeinError, OSError):
        return None
