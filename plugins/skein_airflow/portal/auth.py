"""Who is asking, and may they: Airflow's own authentication and authorization, reused.

- ``portal_user``: Airflow's ``security.get_user`` (an ``Authorization: Bearer`` token, else
  the ``_token`` cookie Airflow's UI keeps, so pages opened from Airflow's nav just work).
  Airflow answers a garbage token with 403 ("Invalid JWT token"); here any failure to say who
  the caller is becomes 401, so a client can tell "log in again" from "not allowed".
- ``campaign_reader`` / ``campaign_editor`` / ``campaign_approver``: Airflow's
  ``requires_access_dag`` on the campaign's DAG (GET; PUT; PUT on its HITL details). Airflow
  itself then checks that an approver is one of the request's assigned users.

Every router of the portal declares ``portal_user`` (``tests/test_portal_api.py`` walks the
app's routes and fails on any without it).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Depends, HTTPException, Request, status

from skein_airflow.portal.sources import dag_id

CAMPAIGN_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")  # skein.spec's rule


class NotAuthenticated(HTTPException):
    """401; pages render it as a link to Airflow's login that comes back here."""

    def __init__(self, detail: str):
        super().__init__(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


async def portal_user(request: Request) -> Any:
    """The Airflow user making the request (``BaseUser``), else 401."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    try:
        user = await get_user(request, None, credentials)
    except HTTPException as exc:
        if exc.status_code in (status.HTTP_401_UNAUTHORIZED, status.HTTP_403_FORBIDDEN):
            raise NotAuthenticated(str(exc.detail)) from None
        raise
    request.state.portal_user = user  # for the error pages and the page header
    return user


def _require(request: Request, user: Any, campaign_id: str, method: str, entity: Any = None) -> None:
    """Airflow's ``requires_access_dag`` for the campaign's DAG (403 when refused)."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    if not CAMPAIGN_ID.match(campaign_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such campaign")
    requires_access_dag(method, entity, param_dag_id=dag_id(campaign_id))(request, user)


def campaign_reader(request: Request, campaign_id: str, user: Any = Depends(portal_user)) -> Any:
    """May read the campaign: GET on its DAG. Returns the user."""
    _require(request, user, campaign_id, "GET")
    return user


def campaign_editor(request: Request, campaign_id: str, user: Any = Depends(portal_user)) -> Any:
    """May act on the campaign (pause, skip, retry...): PUT on its DAG. Returns the user."""
    _require(request, user, campaign_id, "GET")
    _require(request, user, campaign_id, "PUT")
    return user


def campaign_approver(request: Request, campaign_id: str, user: Any = Depends(portal_user)) -> Any:
    """May answer the campaign's approvals: PUT on its DAG's HITL details (Airflow also
    requires an assigned approver, when the request names any). Returns the user."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    _require(request, user, campaign_id, "GET")
    _require(request, user, campaign_id, "PUT", DagAccessEntity.HITL_DETAIL)
    return user


def allowed(user: Any, campaign_id: str, method: str) -> bool:
    """Whether ``user`` may ``method`` the campaign's DAG (for lists and buttons; routes use
    the dependencies above)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.models.dag import DagModel

    dag = dag_id(campaign_id)
    return get_auth_manager().is_authorized_dag(
        method=method, details=DagDetails(id=dag, team_name=DagModel.get_team_name(dag)), user=user)


def user_id(user: Any) -> str:
    """The id Airflow knows the user by (the audit log's ``user:<id>``)."""
    return str(user.get_id())


def login_url(request: Request) -> str:
    """Airflow's login page, coming back to the page asked for."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=str(request.url))
