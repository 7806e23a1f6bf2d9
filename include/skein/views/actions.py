"""The portal's actions on the engine (pause, resume, skip, escalate, release, retry): each
one audited with the person's identity (``user:<id>``) through ``skein.controls``; the front
end only checks who may act.

>>> from skein.store import CampaignStore
>>> from skein.views.status import example_row
>>> store = CampaignStore("sqlite://")
>>> store.index_consumers("demo", "r1", [example_row("r/a.sql", plan_status="failed")])
>>> retry_failed(store, "demo", "alice")
['r/a.sql']
>>> [(e.actor, str(e.action), e.consumer) for e in store.events("demo")]
[('user:alice', 'retry_requested', 'r/a.sql')]
"""

from __future__ import annotations

from skein import controls
from skein.audit import Action
from skein.store import CampaignStore
from skein.views.consumers import consumer_ids
from skein.views.sources import Sources, campaign_spec, run_dir, runs


def actor(user_id: str) -> str:
    """How the audit log names a person.

    >>> actor("alice")
    'user:alice'
    """
    return f"user:{user_id}"


def pause_campaign(store: CampaignStore, campaign_id: str, user_id: str, reason: str | None) -> int:
    return controls.pause(store, campaign_id, actor(user_id), reason)


def resume_campaign(store: CampaignStore, campaign_id: str, user_id: str, reason: str | None) -> int:
    return controls.resume(store, campaign_id, actor(user_id), reason)


def skip_consumer(store: CampaignStore, campaign_id: str, consumer_id: str, user_id: str,
                  reason: str | None) -> int:
    return controls.skip(store, campaign_id, consumer_id, actor(user_id), reason)


def escalate_consumer(store: CampaignStore, campaign_id: str, consumer_id: str, user_id: str,
                      reason: str) -> int:
    return controls.escalate(store, campaign_id, consumer_id, actor(user_id), reason)


def release_consumer(store: CampaignStore, campaign_id: str, consumer_id: str, user_id: str,
                     reason: str | None) -> int:
    return controls.release(store, campaign_id, consumer_id, actor(user_id), reason)


def refresh_summary(src: Sources, campaign_id: str, after: str) -> None:
    """Rewrite the latest run's summary after a person's control (``skein.pipeline.live``), so
    the file an approver or an owner opens says the consumer is skipped, not patched."""
    from skein.pipeline.live import write_live_summary
    from skein.rundir import RunDirectory

    latest = runs(src.store, campaign_id)
    if not latest:
        return
    directory = run_dir(src, campaign_id, latest[-1].run_id)
    if not RunDirectory(directory).has_plan():
        return
    spec = campaign_spec(src, campaign_id)
    write_live_summary(src.store, campaign_id, latest[-1].run_id, directory,
                       [w.name for w in spec.rollout.waves] if spec else [], after)


def retry_failed(store: CampaignStore, campaign_id: str, user_id: str) -> list[str]:
    """Mark every failed consumer for the next run; returns those newly marked."""
    return controls.request_retry(store, campaign_id, consumer_ids(store, campaign_id, "failed"),
                                  actor(user_id))


def record_answer(store: CampaignStore, campaign_id: str, run_id: str, user_id: str, option: str,
                  task_id: str) -> int:
    """The person answered the run's approval in the portal (the run records the decision
    itself when it resumes: ``approved`` / ``rejected``)."""
    return store.record(campaign_id, run_id, actor(user_id), Action.APPROVAL_ANSWERED,
                        message=option, task_id=task_id, channel="portal")
