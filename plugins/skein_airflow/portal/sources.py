"""Where the portal reads: the same campaign store, Skein home and campaign files as the
campaign DAGs' tasks (``SKEIN_STORE_URL``, ``SKEIN_HOME``, ``SKEIN_CAMPAIGNS_DIR``)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4)
def _store(url: str):
    from skein.store import CampaignStore

    return CampaignStore(url)  # opened once per process: opening creates the schema


def sources():
    """The ``skein.views.Sources`` of this process's environment, read on every request (a
    campaign file added meanwhile is listed at once)."""
    from skein.store import default_store_url, skein_home
    from skein.views import Sources
    from skein_airflow.campaign_ids import campaign_files, campaigns_dir

    return Sources(store=_store(default_store_url()), home=skein_home(),
                   campaign_files=tuple(campaign_files(campaigns_dir())))


def dag_id(campaign_id: str) -> str:
    """The campaign's DAG, whose permissions are the campaign's.

    >>> dag_id("plays-v2")
    'skein__plays-v2'
    """
    from skein_airflow.campaign_ids import dag_id_for

    return dag_id_for(campaign_id)


def portal_url(campaign_id: str, consumer_id: str | None = None) -> str:
    """The portal page of a campaign (or of one of its consumers), absolute, from Airflow's
    ``[api] base_url``: approval bodies and notifications are read away from the portal.

    >>> portal_url("plays-v2", "r/q.sql").endswith("/skein/campaigns/plays-v2/consumers/r/q.sql")
    True
    """
    from urllib.parse import quote

    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback=None) or "http://localhost:8080").rstrip("/")
    url = f"{base}/skein/campaigns/{quote(campaign_id)}"
    return url + (f"/consumers/{quote(consumer_id)}" if consumer_id else "")
