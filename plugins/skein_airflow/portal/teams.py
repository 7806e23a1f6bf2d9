"""Bulk actions, the consumer list as CSV, and owner pages (issue 20): routes of their own, so
the portal's API module stays about one campaign and one consumer at a time.

- ``POST /api/v1/campaigns/{id}/bulk`` ``{"action", "consumers": [...], "owner", "reason"}``:
  skip / escalate / release / retry many consumers (or all of one owner's) in one action, each
  audited with the person and the action's ``bulk`` id, one entry in Airflow's audit log;
- ``GET /api/v1/campaigns/{id}/consumers.csv?status&owner&...``: the filtered list, as CSV;
- ``GET /api/v1/owners``, ``GET /api/v1/owners/{owner}`` and the page ``/owners/{owner}``: a
  team's consumers in every campaign the caller may read.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from skein import views
from skein_airflow.portal.api import campaign_known, logged, refreshed, same_origin
from skein_airflow.portal.auth import allowed, campaign_editor, campaign_reader, portal_user, user_id
from skein_airflow.portal.sources import sources

api = APIRouter(prefix="/api/v1", tags=["skein teams"], dependencies=[Depends(portal_user)])
bulk_actions = APIRouter(prefix="/api/v1", tags=["skein actions"],
                         dependencies=[Depends(portal_user), Depends(same_origin)])
pages = APIRouter(dependencies=[Depends(portal_user)], include_in_schema=False)


class BulkBody(BaseModel):
    action: Literal["skip", "escalate", "release", "retry"]
    consumers: list[str] = Field(default_factory=list, max_length=views.bulk.MAX_BULK)
    owner: str | None = Field(None, max_length=250, description="also every consumer this owner owns")
    reason: str | None = Field(None, max_length=2000)


class BulkOut(BaseModel):
    message: str
    result: views.BulkResult


@bulk_actions.post("/campaigns/{campaign_id}/bulk", response_model=BulkOut,
                   dependencies=logged("bulk", campaign_editor))
def bulk(campaign_id: str, body: BulkBody, user: Any = Depends(campaign_editor)) -> BulkOut:
    """One control on many consumers: those it does not apply to are listed with why."""
    from skein_airflow.portal.notify import notify_escalation

    campaign_known(campaign_id)
    if not body.consumers and not body.owner:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "name consumers or an owner")
    src = sources()
    result = views.bulk_control(src.store, campaign_id, body.action, user_id(user),
                                ids=body.consumers, owner=body.owner, reason=body.reason)
    if result.done:
        refreshed(campaign_id, f"a bulk {body.action} of {len(result.done)} consumer(s)", user)
    if body.action == "escalate":
        for cid in result.done:
            notify_escalation(src, campaign_id, cid, user_id(user), body.reason or "escalated in bulk")
    verb = {"skip": "skipped", "escalate": "escalated", "release": "released", "retry": "marked for retry"}
    return BulkOut(message=f"{len(result.done)} consumer(s) {verb[body.action]}"
                   + (f", {len(result.refused)} refused" if result.refused else ""), result=result)


@api.get("/campaigns/{campaign_id}/consumers.csv", dependencies=[Depends(campaign_reader)],
         response_class=Response)
def consumers_csv(campaign_id: str, status_: str | None = Query(None, alias="status"),
                  owner: str | None = None, tier: int | None = None, kind: str | None = None,
                  wave: str | None = None, search: str | None = Query(None, max_length=200)) -> Response:
    """The campaign's consumers (filtered like the list) as CSV, one row each."""
    campaign_known(campaign_id)
    f = views.ConsumerFilter(status=status_, owner=owner, tier=tier, kind=kind, wave=wave, search=search)
    return Response(views.consumers_csv(sources().store, campaign_id, f), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{campaign_id}-consumers.csv"'})


def readable(user: Any) -> set[str]:
    return {cid for cid in views.campaign_ids(sources()) if allowed(user, cid, "GET")}


@api.get("/owners", response_model=list[str])
def list_owners(user: Any = Depends(portal_user)) -> list[str]:
    """Every owner with consumers in a campaign the caller may read."""
    return views.owners(sources(), readable(user))


@api.get("/owners/{owner}", response_model=list[views.OwnerCampaign])
def get_owner(owner: str, user: Any = Depends(portal_user)) -> list[views.OwnerCampaign]:
    """The owner's consumers per campaign (only campaigns the caller may read)."""
    return views.owner_progress(sources(), owner, readable(user))


@pages.get("/owners/{owner}", response_class=HTMLResponse)
def owner_page(request: Request, owner: str, user: Any = Depends(portal_user)) -> HTMLResponse:
    from skein_airflow.portal.pages import render

    return render(request, "owner.html", owner=owner, rows=get_owner(owner, user))
