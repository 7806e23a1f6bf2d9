"""The run's summary (``summary.{json,md,html}``) as the campaign is now, not as it was
planned: every consumer of the run's plan with its current status (``skein.statuses``), who
holds it and why, rewritten after each step that changes a consumer (summarize, apply,
monitor, rollback, finalize) and after a person's control in the portal.

It is a read model over the store's consumer index (one query, like a portal page), so
rewriting it costs what a page view does. ``skein plan`` has no store: its summary stays the
plan's, in the same vocabulary (``skein.statuses.of_plan``).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from skein.rundir import write_atomic
from skein.statuses import Status, legend, what_is_left
from skein.store import CampaignStore

log = logging.getLogger(__name__)


def live_records(store: CampaignStore, campaign_id: str, run_id: str) -> tuple[list[dict], int]:
    """(records of the consumers ``run_id`` planned, with their status now; how many consumers
    of the campaign other runs planned). A held consumer's "why" is the person's reason."""
    from skein.controls import describe_hold
    from skein.views.status import consumer_status

    s = consumer_status(campaign_id)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(s).order_by(s.c.seq, s.c.consumer)).all()
    records, others = [], 0
    for row in rows:
        if row.run_id != run_id:
            others += 1
            continue
        why = row.reason
        if row.hold is not None:
            why = describe_hold(row.hold, row.hold_by, json.loads(row.hold_detail or "{}").get("message"))
        records.append({"order": row.seq, "id": row.consumer, "status": row.status,
                        "wave": row.wave, "owner": row.owner, "reason": why})
    return records, others


def write_live_summary(store: CampaignStore, campaign_id: str, run_id: str, directory: Path,
                       wave_order: list[str], after: str) -> None:
    """Rewrite ``directory``'s summary from the store now (``after``: the step or control that
    changed something). A failure to write is not the step's failure: the audit log is the
    record, and the next step writes the summary again."""
    from skein.evidence import html_page, plan_notes, status_sentence, summary_counts, summary_markdown
    from skein.rundir import RunDirectory

    files = RunDirectory(directory)
    plan, waves = files.plan(), files.waves()
    records, others = live_records(store, campaign_id, run_id)
    counts = summary_counts(records, wave_order)
    left = what_is_left(counts["by_status"])
    notes = [f"Status as of {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, after {after} (run `{run_id}`); "
             "rewritten after every step that changes a consumer and after a person's control.",
             f"**{'Left: ' + left if left else 'Nothing left: every consumer is applied or verified'}**."
             + (f" {others} other consumer(s) of the campaign were planned by other runs." if others else ""),
             "As planned: " + status_sentence(plan, waves), *plan_notes(plan, waves), legend()]
    markdown = summary_markdown(campaign_id, records, wave_order, notes)
    try:
        _write(directory / "summary.json", json.dumps({"campaign": campaign_id, **counts}, indent=2))
        _write(directory / "summary.md", markdown)
        _write(directory / "summary.html", html_page(campaign_id, markdown.replace(".md)", ".html)")))
    except OSError:
        pass


def refresh_summary(ctx, after: str) -> None:
    """``write_live_summary`` for a run context (nothing for ``skein plan``: no store)."""
    if ctx.store is None or not ctx.files.has_plan():
        return
    try:
        write_live_summary(ctx.store, ctx.campaign_id, ctx.run_id, ctx.directory,
                           [w.name for w in ctx.campaign.rollout.waves], after)
    except Exception:  # noqa: BLE001 - a report must never fail the step that changed things
        log.warning("summary of %s run %s not rewritten after %s", ctx.campaign_id, ctx.run_id,
                    after, exc_info=True)


def _write(path: Path, text: str) -> None:
    """Atomically: apply tasks of one wave run at once and each rewrites the summary."""
    write_atomic(path, text.encode("utf-8"))


__all__ = ["Status", "live_records", "refresh_summary", "write_live_summary"]
