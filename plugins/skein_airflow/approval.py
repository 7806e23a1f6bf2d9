"""The campaign's approval: Airflow's human-in-the-loop operator, answered in Required Actions.

Only the campaign's ``rollout.approvers`` may answer (Airflow refuses anybody else with 403).
The body is built when the task runs, from the plan the run just froze, not at parse time.
The answer is written to the campaign store, where the wave tasks read it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator

from skein.approvals import CAMPAIGN_OPTIONS, WAVE_OPTIONS


class CampaignApproval(HITLOperator):
    """``wave=None``: the campaign's approval (all / canary only / reject); else the approval
    of one later wave (continue / stop), when the campaign asks again before each wave."""

    def __init__(self, *, campaign_file: str, approvers: list[str], wave: str | None, **kwargs: Any):
        options = list(CAMPAIGN_OPTIONS if wave is None else WAVE_OPTIONS)
        subject = "Approve the migration campaign" if wave is None else f"Continue with wave {wave}?"
        super().__init__(
            subject=subject, options=options, defaults=None, multiple=False,
            assigned_users=[{"id": a, "name": a} for a in approvers] or None,
            # The wait is for a human: a worker-time limit must not end it. One retry asks
            # again should Airflow lose an answer (3.3.2 fails the task when the answer comes
            # before the scheduler saw it park), rather than ending the campaign run.
            execution_timeout=None, retries=1, retry_delay=timedelta(seconds=5), **kwargs)
        self.campaign_file = campaign_file
        self.wave = wave

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSkipException

        from skein.audit import Action
        from skein.pipeline import (approval_options, approval_text, approved_scope, rebuild_waves,
                                    rollback_reason)
        from skein_airflow.campaign_tasks import run_context
        from skein_airflow.notify import notify
        from skein_airflow.portal.sources import portal_url

        ctx = run_context(self.campaign_file, context)
        if context["params"].get("dry_run"):
            ctx.record(Action.APPROVAL_SKIPPED, message="dry run: nothing will be applied")
            raise AirflowSkipException("dry run: no approval needed")
        if self.wave is not None:
            if approved_scope(ctx) != "all" or rollback_reason(ctx):
                raise AirflowSkipException("the run stopped before this wave")
            self.subject = f"{ctx.campaign.campaign}: continue with wave {self.wave}?"
        else:
            self.subject = f"{ctx.campaign.campaign}: approve {ctx.campaign.title}"
        # Asked now: the plan minus what a person holds now, the canary rebuilt from eligible
        # consumers, the pause said (skein.pipeline.ask). The portal's pages are the live
        # evidence; the run directory keeps the summary.
        state = rebuild_waves(ctx)
        self.options = approval_options(ctx, state, self.wave)
        self.body = approval_text(ctx, evidence_url=portal_url(ctx.campaign_id),
                                  params=dict(context["params"]), state=state,
                                  consumer_url=lambda cid: portal_url(ctx.campaign_id, cid))
        ctx.record(Action.APPROVAL_REQUESTED, wave=self.wave,
                   approvers=[u["id"] for u in self.assigned_users or []])
        notify(ctx, "approval", self.subject,
               f"An approval waits in Airflow (Browse -> Required Actions), run {ctx.run_id}.\n\n"
               + self.body, context)
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]):
        from skein.pipeline import record_decision
        from skein_airflow.campaign_tasks import run_context

        result = super().execute_complete(context, event)
        chosen = result["chosen_options"][0]
        user = (result.get("responded_by_user") or {}).get("id")
        record_decision(run_context(self.campaign_file, context), chosen, user)
        return result

