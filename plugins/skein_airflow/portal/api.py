"""The portal's JSON API, ``/skein/api/v1``: everything the pages show, and the actions.

Reads need GET on the campaign's DAG, actions PUT, approvals PUT on its HITL details (and an
assigned approver). Every action is audited in the campaign store with ``user:<id>`` (and in
Airflow's own audit log, by ``action_logging``).

    curl -H "Authorization: Bearer $TOKEN" http://localhost:8080/skein/api/v1/campaigns
    curl -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\
         -d '{"reason": "owners asked"}' http://localhost:8080/skein/api/v1/campaigns/plays-v2/pause
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from skein import views
from skein.controls import ControlError
from skein_airflow.portal import docs, hitl
from skein_airflow.portal.auth import (
    allowed,
    campaign_approver,
    campaign_editor,
    campaign_reader,
    portal_user,
    user_id,
)
from skein_airflow.portal.sources import dag_id, sources


def _logged(event: str, check) -> list:
    """``check`` (who may act), then Airflow's ``action_logging``: the action is in Airflow's
    Browse -> Audit Log too, next to those made in Airflow's own UI."""
    async def log(request: Request, user: Any = Depends(check)) -> None:
        from airflow.api_fastapi.logging.decorators import action_logging
        from airflow.utils.session import create_session

        with create_session(scoped=False) as session:
            await action_logging(f"skein_portal.{event}")(request, session, user)

    return [Depends(log)]


def same_origin(request: Request) -> None:
    """A browser's cross-site POST is refused even if a cookie rode along (defense in depth:
    Airflow's cookie is SameSite=Lax and actions take only JSON)."""
    origin = request.headers.get("origin")
    if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site request refused")


# Integers from a query string are bounded where they are declared: Python's are not, the
# database's are (a 20-digit offset was a 500 from SQLite's OverflowError).
MAX_QUERY_INT = 2**31 - 1


def offset_query():
    return Query(0, ge=0, le=MAX_QUERY_INT)


def tier_query():
    return Query(None, ge=-MAX_QUERY_INT, le=MAX_QUERY_INT)


router = APIRouter(prefix="/api/v1", tags=["skein"], dependencies=[Depends(portal_user)])
actions = APIRouter(prefix="/api/v1", tags=["skein actions"],
                    dependencies=[Depends(portal_user), Depends(same_origin)])


class ReasonBody(BaseModel):
    reason: str | None = Field(None, max_length=2000)


class EscalationBody(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class AnswerBody(BaseModel):
    option: str = Field(min_length=1, max_length=200, description="One of the request's options")
    task_id: str | None = Field(None, description="Which pending request (default: the oldest)")


class ActionResult(BaseModel):
    message: str
    audit_id: int | None = None
    consumers: list[str] = []


class CampaignOut(BaseModel):
    """The campaign page's data, with what the caller may do."""

    detail: views.CampaignDetail
    dag_id: str
    can_edit: bool
    can_approve: bool  # an approval waits and the caller is one of its approvers
    approval_request: hitl.ApprovalRequest | None


def _campaign_known(campaign_id: str) -> None:
    if campaign_id not in views.campaign_ids(sources()):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such campaign")


def _refreshed(campaign_id: str, what: str, user: Any) -> None:
    """The latest run's summary file says what the person just did (``skein.pipeline.live``);
    the action is done and audited either way, so a failure here is logged, not answered."""
    import logging

    try:
        views.refresh_summary(sources(), campaign_id, f"{what} by user:{user_id(user)}")
    except Exception:  # noqa: BLE001
        logging.getLogger(__name__).warning("summary of %s not rewritten", campaign_id, exc_info=True)


def _conflict(call):
    try:
        return call()
    except ControlError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


@router.get("/campaigns", response_model=list[views.CampaignRow])
def list_campaigns(user: Any = Depends(portal_user)) -> list[views.CampaignRow]:
    """The campaigns the caller may read, with state and counts."""
    src = sources()
    readable = {cid for cid in views.campaign_ids(src) if allowed(user, cid, "GET")}
    return views.catalog(src, readable)


def campaign_out(campaign_id: str, user: Any) -> CampaignOut:
    """The campaign's detail plus Airflow's view of it (pending HITL request, permissions)."""
    _campaign_known(campaign_id)
    detail = views.campaign_detail(sources(), campaign_id)
    pending = hitl.pending_requests(dag_id(campaign_id))
    request = pending[0] if pending else None
    can_edit = allowed(user, campaign_id, "PUT")
    can_approve = bool(request) and can_edit and (not request.approvers or user_id(user) in request.approvers)
    return CampaignOut(detail=detail, dag_id=dag_id(campaign_id), can_edit=can_edit,
                       can_approve=can_approve, approval_request=request)


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
def get_campaign(campaign_id: str, user: Any = Depends(campaign_reader)) -> CampaignOut:
    """Waves with their monitoring, the per-owner table, runs, the pending approval."""
    return campaign_out(campaign_id, user)


@router.get("/campaigns/{campaign_id}/consumers", response_model=views.ConsumerPage,
            dependencies=[Depends(campaign_reader)])
def list_consumers(campaign_id: str, status_: str | None = Query(None, alias="status"),
                   owner: str | None = None, tier: int | None = tier_query(), kind: str | None = None,
                   wave: str | None = None, search: str | None = Query(None, max_length=200),
                   limit: int = Query(50, ge=1, le=500), offset: int = offset_query()) -> views.ConsumerPage:
    """A page of the campaign's consumers (filtered and paged in the database)."""
    _campaign_known(campaign_id)
    f = views.ConsumerFilter(status=status_, owner=owner, tier=tier, kind=kind, wave=wave, search=search)
    return views.consumer_page(sources().store, campaign_id, f, limit=limit, offset=offset)


@router.get("/campaigns/{campaign_id}/consumers/{consumer_id:path}", response_model=views.ConsumerDetail,
            dependencies=[Depends(campaign_reader)])
def get_consumer(campaign_id: str, consumer_id: str) -> views.ConsumerDetail:
    """Diff, dry run (parity, differing rows, expectations), agents, audit, commits."""
    detail = views.consumer_detail(sources(), campaign_id, consumer_id)
    if detail is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such consumer in this campaign")
    return detail


@router.get("/campaigns/{campaign_id}/burndown", response_model=views.Burndown,
            dependencies=[Depends(campaign_reader)])
def get_burndown(campaign_id: str, points: int = Query(200, ge=2, le=2000)) -> views.Burndown:
    """Consumers still reading the old dataset, over time."""
    _campaign_known(campaign_id)
    return views.burndown(sources().store, campaign_id, points)


@router.get("/campaigns/{campaign_id}/audit", response_model=views.AuditPage,
            dependencies=[Depends(campaign_reader)])
def get_audit(campaign_id: str, consumer: str | None = None, limit: int = Query(100, ge=1, le=500),
              offset: int = offset_query()) -> views.AuditPage:
    """The campaign's audit log, newest first."""
    _campaign_known(campaign_id)
    return views.audit_page(sources().store, campaign_id, consumer=consumer, limit=limit, offset=offset)


@router.get("/docs", response_model=list[docs.DocRef])
def list_docs() -> list[docs.DocRef]:
    """Skein's documentation pages."""
    return docs.index()


@router.get("/docs/{name}", response_model=docs.Doc)
def get_doc(name: str) -> docs.Doc:
    """One documentation page, as HTML (Markdown rendered with raw HTML disabled)."""
    return docs.page(name)


@actions.post("/campaigns/{campaign_id}/pause", response_model=ActionResult,
              dependencies=_logged("pause", campaign_editor))
def pause(campaign_id: str, body: ReasonBody, user: Any = Depends(campaign_editor)) -> ActionResult:
    """Pause the campaign: nothing more is applied (a wave stops at its next consumer)."""
    _campaign_known(campaign_id)
    audit_id = _conflict(lambda: views.pause_campaign(sources().store, campaign_id, user_id(user), body.reason))
    _refreshed(campaign_id, "a pause", user)
    return ActionResult(message=f"{campaign_id} paused", audit_id=audit_id)


@actions.post("/campaigns/{campaign_id}/resume", response_model=ActionResult,
              dependencies=_logged("resume", campaign_editor))
def resume(campaign_id: str, body: ReasonBody, user: Any = Depends(campaign_editor)) -> ActionResult:
    """Resume the campaign (the waiting run, or the next one, goes on)."""
    _campaign_known(campaign_id)
    audit_id = _conflict(lambda: views.resume_campaign(sources().store, campaign_id, user_id(user), body.reason))
    _refreshed(campaign_id, "a resume", user)
    return ActionResult(message=f"{campaign_id} resumed", audit_id=audit_id)


@actions.post("/campaigns/{campaign_id}/retry-failed", response_model=ActionResult,
              dependencies=_logged("retry_failed", campaign_editor))
def retry_failed(campaign_id: str, user: Any = Depends(campaign_editor)) -> ActionResult:
    """Mark every failed consumer for the next run."""
    _campaign_known(campaign_id)
    marked = views.retry_failed(sources().store, campaign_id, user_id(user))
    _refreshed(campaign_id, "a retry", user)
    return ActionResult(message=f"{len(marked)} failed consumer(s) marked for the next run",
                        consumers=marked)


@actions.post("/campaigns/{campaign_id}/consumers/{consumer_id:path}/skip", response_model=ActionResult,
              dependencies=_logged("skip_consumer", campaign_editor))
def skip(campaign_id: str, consumer_id: str, body: ReasonBody,
         user: Any = Depends(campaign_editor)) -> ActionResult:
    """Leave the consumer out of every later wave."""
    _campaign_known(campaign_id)
    audit_id = _conflict(lambda: views.skip_consumer(sources().store, campaign_id, consumer_id,
                                                     user_id(user), body.reason))
    _refreshed(campaign_id, f"a skip of {consumer_id}", user)
    return ActionResult(message=f"{consumer_id} skipped", audit_id=audit_id, consumers=[consumer_id])


@actions.post("/campaigns/{campaign_id}/consumers/{consumer_id:path}/escalate",
              response_model=ActionResult, dependencies=_logged("escalate_consumer", campaign_editor))
def escalate(campaign_id: str, consumer_id: str, body: EscalationBody,
             user: Any = Depends(campaign_editor)) -> ActionResult:
    """Give the consumer to a human: audited, notified, left out of later waves."""
    from skein_airflow.portal.notify import notify_escalation

    _campaign_known(campaign_id)
    src = sources()
    audit_id = _conflict(lambda: views.escalate_consumer(src.store, campaign_id, consumer_id,
                                                         user_id(user), body.reason))
    _refreshed(campaign_id, f"an escalation of {consumer_id}", user)
    sent = notify_escalation(src, campaign_id, consumer_id, user_id(user), body.reason)
    return ActionResult(message=f"{consumer_id} escalated; notified: {', '.join(sent) or 'nobody'}",
                        audit_id=audit_id, consumers=[consumer_id])


@actions.post("/campaigns/{campaign_id}/consumers/{consumer_id:path}/release",
              response_model=ActionResult, dependencies=_logged("release_consumer", campaign_editor))
def release(campaign_id: str, consumer_id: str, body: ReasonBody,
            user: Any = Depends(campaign_editor)) -> ActionResult:
    """Undo a skip or an escalation: the consumer is in the later waves again."""
    _campaign_known(campaign_id)
    audit_id = _conflict(lambda: views.release_consumer(sources().store, campaign_id, consumer_id,
                                                        user_id(user), body.reason))
    _refreshed(campaign_id, f"a release of {consumer_id}", user)
    return ActionResult(message=f"{consumer_id} released: it is in the later waves again",
                        audit_id=audit_id, consumers=[consumer_id])


@actions.post("/campaigns/{campaign_id}/approval", response_model=ActionResult,
              dependencies=_logged("answer_approval", campaign_approver))
def answer_approval(campaign_id: str, body: AnswerBody, user: Any = Depends(campaign_approver)) -> ActionResult:
    """Answer the pending approval through Airflow's HITL (only its assigned approvers)."""
    _campaign_known(campaign_id)
    pending = hitl.pending_requests(dag_id(campaign_id))
    chosen = [r for r in pending if body.task_id in (None, r.task_id)]
    if not chosen:
        raise HTTPException(status.HTTP_409_CONFLICT, "no approval is waiting")
    request = chosen[0]
    hitl.answer(dag_id(campaign_id), request, body.option, user)
    audit_id = views.record_answer(sources().store, campaign_id, request.run_id, user_id(user),
                                   body.option, request.task_id)
    return ActionResult(message=f"answered {body.option!r} to {request.task_id} of run {request.run_id}",
                        audit_id=audit_id)


# Public names for the portal's other route modules (portal.teams).
campaign_known, logged, refreshed = _campaign_known, _logged, _refreshed
