"""Many consumers at once: skip, escalate, release or retry a selection (ids, or every consumer
of one owner) in one action, each consumer audited as if done alone (``skein.controls``) with
the same ``bulk`` id, so the log shows them as one decision; the consumer list as CSV; an
owning team's progress across campaigns.

>>> from skein.store import CampaignStore
>>> from skein.views.status import example_row
>>> store = CampaignStore("sqlite://")
>>> store.index_consumers("demo", "r1", [example_row("r/a.sql", owner="ops"),
...                                      example_row("r/b.sql", seq=2, owner="ops")])
>>> done = bulk_control(store, "demo", "skip", "alice", owner="ops", reason="freeze")
>>> done.done, done.refused
(['r/a.sql', 'r/b.sql'], {})
>>> bulk_control(store, "demo", "skip", "alice", ids=["r/a.sql", "r/x.sql"]).refused["r/x.sql"]
'r/x.sql is not a consumer of campaign demo'
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel

from skein import controls
from skein.store import CampaignStore, consumers
from skein.views.actions import actor
from skein.views.consumers import ConsumerFilter, consumer_page

BulkAction = Literal["skip", "escalate", "release", "retry"]
MAX_BULK = 10_000


class BulkResult(BaseModel):
    action: BulkAction
    bulk: str  # the id every audit event of this action carries
    done: list[str]
    refused: dict[str, str]  # consumer -> why the control does not apply to it


def selection(store: CampaignStore, campaign_id: str, ids: list[str] | None,
              owner: str | None) -> list[str]:
    """The consumers an action names: ``ids`` as given, plus every consumer ``owner`` owns."""
    chosen = list(dict.fromkeys(ids or []))
    if owner:
        with store.engine.connect() as conn:
            owned = conn.execute(sa.select(consumers.c.consumer)
                                 .where(consumers.c.campaign == campaign_id, consumers.c.owner == owner)
                                 .order_by(consumers.c.seq, consumers.c.consumer)).scalars()
            chosen += [cid for cid in owned if cid not in chosen]
    return chosen[:MAX_BULK]


def bulk_control(store: CampaignStore, campaign_id: str, action: BulkAction, user_id: str, *,
                 ids: list[str] | None = None, owner: str | None = None,
                 reason: str | None = None) -> BulkResult:
    """Apply one control to each selected consumer; those it does not apply to (already
    skipped, applied, not failed...) are refused with the reason, the others done."""
    who, bulk = actor(user_id), uuid.uuid4().hex[:12]
    done, refused = [], {}
    chosen = selection(store, campaign_id, ids, owner)
    if action == "retry":
        failed = {cid for cid in chosen if controls.known_consumer(store, campaign_id, cid)
                  and _status(store, campaign_id, cid) == "failed"}
        refused = {cid: f"{cid} has not failed: nothing to retry" for cid in chosen if cid not in failed}
        done = controls.request_retry(store, campaign_id, [c for c in chosen if c in failed], who)
        return BulkResult(action=action, bulk=bulk, done=done, refused=refused)
    for cid in chosen:
        try:
            if action == "skip":
                controls.skip(store, campaign_id, cid, who, reason, bulk=bulk)
            elif action == "escalate":
                controls.escalate(store, campaign_id, cid, who, reason or "escalated in bulk", bulk=bulk)
            else:
                controls.release(store, campaign_id, cid, who, reason, bulk=bulk)
        except controls.ControlError as exc:
            refused[cid] = str(exc)
            continue
        done.append(cid)
    return BulkResult(action=action, bulk=bulk, done=done, refused=refused)


def _status(store: CampaignStore, campaign_id: str, consumer_id: str) -> str | None:
    from skein.views.consumers import consumer_row

    row = consumer_row(store, campaign_id, consumer_id)
    return row.status if row is not None else None


CSV_COLUMNS = ("order", "id", "status", "owner", "tier", "kind", "impact", "wave", "plan_status",
               "reason", "held_by", "held_why", "run_id", "changed_at")


def csv_cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: consumer ids and reasons are untrusted, and a
    cell starting with ``=``, ``+``, ``-`` or ``@`` would be run as a formula.

    >>> csv_cell("=HYPERLINK(1)"), csv_cell(None), csv_cell(3)
    ("'=HYPERLINK(1)", '', '3')
    """
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def consumers_csv(store: CampaignStore, campaign_id: str, f: ConsumerFilter) -> str:
    """Every consumer matching ``f`` as CSV (a header, then one row each, in the list's order)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    offset = 0
    while True:
        page = consumer_page(store, campaign_id, f, limit=500, offset=offset)
        for item in page.items:
            values = item.model_dump()
            writer.writerow([csv_cell(values[c]) for c in CSV_COLUMNS])
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return out.getvalue()
