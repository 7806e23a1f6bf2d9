"""An auth manager for the portal's tests: Airflow's SimpleAuthManager, except that the users
named in ``$SKEIN_TEST_NO_DAG_ACCESS`` (comma separated) may not read or edit any DAG whose
id matches ``$SKEIN_TEST_NO_DAG_ACCESS_DAGS`` (fnmatch, default every DAG).

SimpleAuthManager grants by role alone (every viewer reads every DAG); a real deployment
restricts per DAG (FAB, Keycloak). This stands in for that, so the tests can prove the portal
asks Airflow about the campaign's DAG, and hides what Airflow says the user may not see.
"""

from __future__ import annotations

import fnmatch
import os

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class RestrictedAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        denied = {u for u in os.environ.get("SKEIN_TEST_NO_DAG_ACCESS", "").split(",") if u}
        pattern = os.environ.get("SKEIN_TEST_NO_DAG_ACCESS_DAGS", "*")
        if user.get_id() in denied and (details is None or details.id is None
                                        or fnmatch.fnmatch(details.id, pattern)):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity,
                                         details=details)
