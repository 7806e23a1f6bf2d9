"""The campaign's pending approval, from Airflow's HITL tables, and its answer through
Airflow's own HITL update (``update_hitl_detail``, the function behind
``PATCH .../taskInstances/{task}/{map_index}/hitlDetails``): the same checks (assigned
approvers, valid options, answered once) and the same effect (the waiting task resumes), so
Browse -> Required Actions and the portal always agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class ApprovalRequest(BaseModel):
    """An unanswered HITL request of the campaign's DAG."""

    run_id: str
    task_id: str
    map_index: int
    subject: str
    body: str | None
    options: list[str]
    approvers: list[str]  # assigned user ids; empty: anybody who may edit the DAG
    created_at: datetime
    state: str | None


def pending_requests(dag_id: str) -> list[ApprovalRequest]:
    """The DAG's unanswered approval requests, oldest first."""
    import sqlalchemy as sa

    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    query = (sa.select(HITLDetail, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index,
                       TaskInstance.state)
             .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
             .where(TaskInstance.dag_id == dag_id, HITLDetail.responded_at.is_(None))
             .order_by(HITLDetail.created_at))
    with create_session(scoped=False) as session:
        return [ApprovalRequest(run_id=run_id, task_id=task_id, map_index=map_index,
                                subject=detail.subject, body=detail.body,
                                options=list(detail.options or []),
                                approvers=[u["id"] for u in detail.assigned_users],
                                created_at=detail.created_at, state=str(state) if state else None)
                for detail, run_id, task_id, map_index, state in session.execute(query).all()]


def answer(dag_id: str, request: ApprovalRequest, option: str, user: Any) -> dict:
    """Answer ``request`` as ``user`` with Airflow's own update; raises its HTTPException
    (403 not an assigned approver, 400 not an option, 409 already answered)."""
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.utils.session import create_session

    with create_session(scoped=False) as session:  # commits when the update returns
        response = update_hitl_detail(
            dag_id=dag_id, dag_run_id=request.run_id, task_id=request.task_id,
            update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[option]),
            user=user, session=session, map_index=request.map_index)
        return response.model_dump(mode="json")
