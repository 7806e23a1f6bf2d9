"""Campaign notifications through Airflow's own notifiers (Slack webhook, SMTP).

The campaign says which connections and events (``notifications`` in the spec). A failed
notification is logged and audited, never fails the step that sent it: a campaign must not
roll back because a mail server is down.
"""

from __future__ import annotations

import logging

from skein.audit import Action

log = logging.getLogger(__name__)


def notify(ctx, event: str, subject: str, text: str, context) -> list[str]:
    """Send ``subject``/``text`` (Markdown) for ``event`` on every configured channel; returns
    the channels that accepted it."""
    settings = ctx.campaign.notifications
    if event not in settings.events:
        return []
    sent = []
    if settings.slack_conn_id:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        _send(ctx, event, "slack", sent, lambda: SlackWebhookNotifier(
            slack_webhook_conn_id=settings.slack_conn_id, text=f"*{subject}*\n{text}").notify(context))
    if settings.smtp_conn_id and settings.email_to:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        from skein.evidence import markdown_html

        _send(ctx, event, "email", sent, lambda: SmtpNotifier(
            to=settings.email_to, smtp_conn_id=settings.smtp_conn_id, subject=subject,
            html_content=markdown_html(text)).notify(context))
    return sent


def _send(ctx, event: str, channel: str, sent: list[str], call) -> None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - reported, never fatal
        log.warning("Skein %s notification over %s failed: %s", event, channel, exc)
        ctx.record(Action.NOTIFY_FAILED, event=event, channel=channel, message=str(exc))
        return
    ctx.record(Action.NOTIFIED, event=event, channel=channel)
    sent.append(channel)
