"""The Skein portal as an Airflow plugin: a FastAPI app on Airflow's own API server at
``/skein`` (no separate service) and an entry in Airflow's navigation.

Airflow imports every ``.py`` file under ``plugins/`` as a top-level module to look for
plugins; ``plugins/.airflowignore`` keeps it out of ``skein_airflow/portal/`` (a package,
imported normally), so this file is the portal's only entry point and the plugin is
registered once.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from skein_airflow.portal.app import create_app

app = create_app()


class SkeinPortalPlugin(AirflowPlugin):
    name = "skein_portal"
    fastapi_apps = [{"app": app, "url_prefix": "/skein", "name": "Skein"}]
    # Shown in Airflow's navigation, the portal framed in Airflow's UI (same origin, so the
    # browser's Airflow session cookie authenticates it).
    external_views = [{"name": "Skein", "href": "/skein/", "destination": "nav",
                       "url_route": "skein"}]
