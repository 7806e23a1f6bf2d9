"""An owning team's page: its consumers' progress in every campaign, at a URL it can bookmark
(``/skein/owners/<owner>``) and a Backstage entity can link to.

>>> from pathlib import Path
>>> from skein.store import CampaignStore
>>> from skein.views.sources import Sources
>>> from skein.views.status import example_row
>>> store = CampaignStore("sqlite://")
>>> _ = store.record("demo", "r1", "cli", "run_started")
>>> store.index_consumers("demo", "r1", [example_row("r/a.sql", owner="ops"), example_row("r/b.sql")])
>>> [(p.campaign, p.consumers, p.counts) for p in owner_progress(Sources(store, Path("/x")), "ops")]
[('demo', 1, {'pending': 1})]
"""

from __future__ import annotations

from pydantic import BaseModel

from skein.statuses import STATUSES, what_is_left
from skein.views.campaigns import CampaignState, catalog_row, counts_by
from skein.views.sources import Sources, campaign_ids


class OwnerCampaign(BaseModel):
    """One campaign as an owning team sees it: only its own consumers counted."""

    campaign: str
    title: str | None
    source: str | None
    target: str | None
    state: CampaignState  # the campaign's, for everyone
    consumers: int  # the team's
    counts: dict[str, int]  # the team's consumers per status
    left: str | None  # what is left of the team's (skein.statuses.what_is_left)


def owner_progress(src: Sources, owner: str, allowed: set[str] | None = None) -> list[OwnerCampaign]:
    """The campaigns (``allowed``: only these ids) in which ``owner`` owns consumers."""
    out = []
    for cid in campaign_ids(src):
        if allowed is not None and cid not in allowed:
            continue
        by_owner = counts_by(src, cid, "owner")
        mine = by_owner.get(owner)
        if not mine:
            continue
        row = catalog_row(src, cid, by_owner)
        counts = {s: mine[s] for s in STATUSES if mine.get(s)}
        out.append(OwnerCampaign(campaign=cid, title=row.title, source=row.source, target=row.target,
                                 state=row.state, consumers=sum(counts.values()), counts=counts,
                                 left=what_is_left(counts)))
    return out


def owners(src: Sources, allowed: set[str] | None = None) -> list[str]:
    """Every owner with consumers in the campaigns ``allowed``."""
    found: set[str] = set()
    for cid in campaign_ids(src):
        if allowed is None or cid in allowed:
            found.update(o for o in counts_by(src, cid, "owner") if o)
    return sorted(found)
