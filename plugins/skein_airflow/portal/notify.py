"""A person's escalation in the portal, sent on the campaign's notification channels
(``skein_airflow.notify``: Slack webhook, SMTP), as the DAG's tasks send theirs."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def notify_escalation(src, campaign_id: str, consumer_id: str, user: str, reason: str) -> list[str]:
    """Notify the ``escalation`` event; returns the channels that took it (failures are
    audited ``notify_failed`` and logged, never raised: the escalation itself is recorded)."""
    from skein.controls import NO_RUN
    from skein.pipeline import RunContext
    from skein.rundir import RunDirectory
    from skein.views import campaign_spec, runs
    from skein.views.sources import run_dir
    from skein_airflow.notify import notify

    spec = campaign_spec(src, campaign_id)
    if spec is None:
        return []
    history = runs(src.store, campaign_id)
    files = RunDirectory(run_dir(src, campaign_id, history[-1].run_id) if history else src.home)
    ctx = RunContext(campaign=spec, run_id=NO_RUN, store=src.store, files=files, actor=f"user:{user}")
    try:
        return notify(ctx, "escalation", f"{campaign_id}: {consumer_id} escalated by {user}",
                      f"`{consumer_id}` was escalated to a human in the Skein portal by {user}: "
                      f"{reason}", context={})
    except Exception:  # noqa: BLE001 - a notifier that cannot even be built must not undo it
        log.exception("escalation notification of %s failed", consumer_id)
        return []
