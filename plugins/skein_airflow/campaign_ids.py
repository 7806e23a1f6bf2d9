"""Where campaign files live and how their DAGs are named: Airflow-free, so the portal and
the DAG factory share it without importing each other (the approval operator imports the
portal's URLs, and the DAG factory imports the approval operator)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
DAG_ID_PREFIX = "skein__"


def campaigns_dir() -> Path:
    """``$SKEIN_CAMPAIGNS_DIR``, else the demo fleet's campaigns inside the project.

    An environment variable rather than an Airflow Variable: reading a Variable at
    parse time is a DB (or API) call in every parse of every DAG file.
    """
    configured = os.environ.get("SKEIN_CAMPAIGNS_DIR")
    return Path(configured) if configured else PROJECT_DIR / ".skein" / "demo" / "campaigns"


def campaign_files(directory: Path) -> list[Path]:
    """Campaign files directly in ``directory`` (``skein.campaign_files``: the engine's rule,
    which ``skein validate DIR`` follows too)."""
    from skein.campaign_files import campaign_files as files_in

    return files_in(directory)


def dag_id_for(campaign_id: str) -> str:
    return DAG_ID_PREFIX + campaign_id
