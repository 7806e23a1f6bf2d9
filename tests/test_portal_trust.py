"""Issue 20: what a reviewer reads is what happened. Through the engine's read models (no
Airflow): the approval after a person's holds and during a pause, the live summary after
the waves, one row per consumer after several runs, a campaign that is not done while
consumers wait for a human, one vocabulary of statuses.

Each scenario plans the demo fleet for real (git repositories, DuckDB) in its own copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skein import views
from skein.audit import Action
from skein.pipeline import apply_wave, approval_text, record_decision, start_wave, wave_batches
from skein.store import CampaignStore
from skein.views.consumers import ConsumerFilter
from test_portal_views import CAMPAIGN, approve_and_apply, fleet, plan_run  # noqa: F401 - fixture


@pytest.fixture
def world(fleet, tmp_path):  # noqa: F811 - the imported fixture
    """A fresh copy of the demo fleet, a store and a home; nothing planned yet."""
    shutil.copytree(fleet, tmp_path / "fleet", symlinks=True)
    campaign, home = tmp_path / "fleet" / "campaigns" / f"{CAMPAIGN}.yaml", tmp_path / "home"
    home.mkdir()
    store = CampaignStore(f"sqlite:///{home / 'store.db'}")
    return {"campaign": campaign, "home": home, "store": store,
            "src": views.Sources(store=store, home=home, campaign_files=(campaign,))}


def statuses(store) -> dict[str, str]:
    return {c.id: c.status for c in views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=500).items}


# -- defect 2: the approval respects holds and pauses ------------------------------------------


def test_the_approval_says_what_is_held_and_paused_and_rebuilds_the_canary(world):
    """The whole canary escalated by a person and the campaign paused before the approval is
    asked: the approval lists the held consumers with who and why, does not count them as
    patched, says the campaign is paused, and the canary is rebuilt from eligible consumers,
    so "Approve canary only" applies something."""
    store = world["store"]
    ctx, summary = plan_run(world["campaign"], world["home"], store, "r1")
    canary = summary.waves["canary"]
    patched = {i.id for i in summary.plan.with_status("patched")}
    assert canary and set(canary) <= patched | {i.id for i in summary.plan.with_status("unchanged")}
    for cid in canary:
        views.escalate_consumer(store, CAMPAIGN, cid, "bob", "needs a human review")
    views.pause_campaign(store, CAMPAIGN, "carol", "owners asked to wait")

    text = approval_text(ctx)
    assert "**The campaign is paused** by user:carol" in text and "owners asked to wait" in text
    for cid in canary:
        assert f"`{cid}`: escalated by user:bob: needs a human review" in text
    held_patched = len(set(canary) & patched)
    assert f"**{len(patched) - held_patched} pending** (patched" in text  # held ones are not counted

    from skein.pipeline import approval_options, rebuild_waves

    state = rebuild_waves(ctx)  # what the approval step does before it asks
    assert set(state.held) == set(canary)
    new_canary = ctx.files.waves()["canary"]
    assert new_canary and not set(new_canary) & set(canary)
    assert "wave `canary` rebuilt from the eligible consumers" in approval_text(ctx, state=state)
    assert "Approve canary only" in approval_options(ctx, state)

    record_decision(ctx, "Approve canary only", "alice")
    assert start_wave(ctx, "canary") == "campaign paused by user:carol"  # the pause holds
    views.resume_campaign(store, CAMPAIGN, "carol", None)
    assert start_wave(ctx, "canary") is None
    for batch in wave_batches(ctx, "canary", "default"):
        apply_wave(ctx, "canary", batch)
    applied = {e.consumer for e in store.events(CAMPAIGN, "r1", actions=(Action.APPLIED,))}
    assert applied and applied <= set(new_canary) and not applied & set(canary)


def test_an_approval_that_would_apply_nothing_says_so_and_offers_no_canary(world):
    from skein.pipeline import approval_options, rebuild_waves

    store = world["store"]
    ctx, summary = plan_run(world["campaign"], world["home"], store, "r1")
    for cid in (c for ids in summary.waves.values() for c in ids):
        views.skip_consumer(store, CAMPAIGN, cid, "bob", "not this quarter")
    state = rebuild_waves(ctx)
    assert state.eligible == 0
    assert approval_options(ctx, state) == ["Approve all", "Reject"]
    text = approval_text(ctx, state=state)
    assert "**Approving applies nothing now**" in text and "every one it would apply is held" in text


# -- defect 3: the summary is live -------------------------------------------------------------


def summary_line(directory: Path, cid: str) -> str:
    """The consumer's row of the run's summary.md."""
    return next(line for line in (directory / "summary.md").read_text().splitlines()
                if f"[{cid}](" in line)


def test_the_summary_after_the_waves_says_what_happened(world):
    """Skipped and escalated in the portal, then the waves: the run's summary lists them as
    skipped and escalated (with who and why) and the rest as applied, not as planned; a
    person's control later rewrites it again."""
    store, src = world["store"], world["src"]
    ctx, summary = plan_run(world["campaign"], world["home"], store, "r1")
    patched = [c for c in summary.waves["everyone"] if c in {i.id for i in summary.plan.with_status("patched")}]
    skipped, escalated = patched[0], patched[1]
    views.skip_consumer(store, CAMPAIGN, skipped, "alice", "owner asked to wait")
    views.escalate_consumer(store, CAMPAIGN, escalated, "bob", "needs a human review")
    approve_and_apply(ctx)
    directory = ctx.directory
    assert "| skipped | everyone |" in summary_line(directory, skipped)
    assert "skipped by user:alice: owner asked to wait" in summary_line(directory, skipped)
    assert "| escalated |" in summary_line(directory, escalated)
    applied = next(c for c in patched[2:])
    assert "| applied |" in summary_line(directory, applied)
    html = (directory / "summary.html").read_text()
    assert "after the run finished" in html and "patched" not in summary_line(directory, skipped)
    counts = ctx.files.summary()
    assert counts.by_status["skipped"] == 1 and counts.by_status["applied"] >= len(patched) - 2

    views.release_consumer(store, CAMPAIGN, skipped, "carol", "the owner is back")
    views.refresh_summary(src, CAMPAIGN, "a release by user:carol")  # what the portal's API does
    assert "| pending |" in summary_line(directory, skipped)
    assert "after a release by user:carol" in (directory / "summary.md").read_text()


# -- defect 4: one row per consumer, numbered once, after several runs -------------------------


def test_the_consumer_list_numbers_each_consumer_once_after_several_runs(world):
    """A first run applies the canary only; the second plans what is left (numbered 1, 2...
    again by its discovery): the list still has one row per consumer, each with its own
    number, in one order, and each row's state is its current one."""
    store = world["store"]
    ctx, summary = plan_run(world["campaign"], world["home"], store, "r1")
    record_decision(ctx, "Approve canary only", "alice")
    assert start_wave(ctx, "canary") is None
    for batch in wave_batches(ctx, "canary", "default"):
        apply_wave(ctx, "canary", batch)
    from skein.pipeline import finalize

    finalize(ctx)
    first = {c.id: c.order for c in views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=500).items}
    ctx2, summary2 = plan_run(world["campaign"], world["home"], store, "r2")
    assert len(summary2.plan.items) < len(summary.plan.items)  # the canary no longer reads the source
    page = views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=500)
    ids, orders = [c.id for c in page.items], [c.order for c in page.items]
    assert len(ids) == len(set(ids)) == page.total
    assert len(orders) == len(set(orders)), "two consumers share a number"
    assert orders == sorted(orders)
    assert {c.id: c.order for c in page.items if c.id in first} == first  # numbers are kept
    runs_in_order = [c.run_id for c in page.items]
    assert {"r1", "r2"} <= set(runs_in_order)
    canary = set(summary.waves["canary"])
    assert all(c.status in ("applied", "verified") for c in page.items if c.id in canary)


# -- defect 5: done means nothing reads the source; one vocabulary ------------------------------


def test_a_campaign_is_not_done_while_consumers_wait_for_a_human(world):
    store, src = world["store"], world["src"]
    ctx, summary = plan_run(world["campaign"], world["home"], store, "r1")
    escalated_by_agents = summary.plan.counts["escalated"]
    assert escalated_by_agents  # the demo escalates some consumers (a dropped column...)
    patched = [c for c in summary.waves["everyone"] if c in {i.id for i in summary.plan.with_status("patched")}]
    views.skip_consumer(store, CAMPAIGN, patched[0], "alice", "owner asked to wait")
    assert approve_and_apply(ctx)["status"] == "finished"
    row = views.catalog_row(src, CAMPAIGN)
    assert row.state == "applied" and row.state != "done"
    assert row.left.startswith(f"{row.counts['escalated'] + row.counts.get('blocked', 0) + row.counts.get('failed', 0)} need a human")
    assert "1 skipped" in row.left
    assert views.burndown(store, CAMPAIGN).remaining > 0  # files still read the old table


def test_one_vocabulary_of_statuses_everywhere(world):
    """The portal's statuses, the summary's and the approval's words come from skein.statuses,
    and docs/portal.md describes each one."""
    from skein.statuses import Status

    store = world["store"]
    ctx, _ = plan_run(world["campaign"], world["home"], store, "r1")
    words = {str(s) for s in Status}
    assert set(views.STATUSES) == words
    assert set(statuses(store).values()) <= words
    assert set(ctx.files.summary().by_status) <= words
    text = approval_text(ctx)
    assert " patched**" not in text and "verified unchanged" not in text and "pending**" in text
    docs = (Path(__file__).parent.parent / "docs" / "portal.md").read_text()
    for status in Status:
        assert f"| {status} | {status.description} |" in docs, status


# -- defect 6: the pages say what happened, why, and that an action took --------------------------


def render(name: str, src, **values) -> str:
    """A portal page's template rendered as the portal does (pages.render without a request)."""
    from skein_airflow.portal import pages

    return pages.templates.get_template(name).render(
        base="/skein", airflow="/", user="alice", markdown=pages.markdown,
        link=lambda *parts, **query: pages.link("/skein", *parts, **query), **values)


def test_waves_reasons_colours_and_the_answer_read_as_they_are(world):
    from skein_airflow.portal.api import CampaignOut

    store, src = world["store"], world["src"]
    ctx, summary = plan_run(world["campaign"], world["home"], store, "r1")
    ctx.record(Action.APPROVAL_REQUESTED, approvers=["alice"])
    assert views.catalog_row(src, CAMPAIGN).state == "awaiting approval"
    views.record_answer(store, CAMPAIGN, "r1", "alice", "Approve all", "approval")
    assert views.catalog_row(src, CAMPAIGN).state == "rolling out"  # the answer counts at once
    patched = [c for c in summary.waves["everyone"] if c in {i.id for i in summary.plan.with_status("patched")}]
    views.skip_consumer(store, CAMPAIGN, patched[0], "alice", "owner on holiday")
    approve_and_apply(ctx)
    views.pause_campaign(store, CAMPAIGN, "bob", "freeze week")

    detail = views.campaign_detail(src, CAMPAIGN)
    assert [w.outcome for w in detail.waves] == ["applied, monitoring passed"] * 2
    assert (detail.row.paused_by, detail.row.paused_why) == ("user:bob", "freeze week")
    page = views.consumer_page(store, CAMPAIGN, ConsumerFilter(status="skipped"))
    assert [(c.held_by, c.held_why) for c in page.items] == [("user:alice", "owner on holiday")]

    out = CampaignOut(detail=detail, dag_id="skein__plays-v2", can_edit=True, can_approve=False,
                      approval_request=None)
    html = render("campaign.html", src, out=out, d=detail, page=page, filters={
        "status": None, "owner": None, "tier": None, "kind": None, "wave": None, "search": None},
        burndown=views.burndown(store, CAMPAIGN), chart=None, me="alice")
    assert "applied, monitoring passed" in html and ">started<" not in html
    assert "by user:alice: owner on holiday" in html and "freeze week" in html
    assert 'id="flash"' in render("base.html", src)  # where portal.js shows what an action did
    catalog = render("catalog.html", src, rows=views.catalog(src))
    assert "freeze week" in catalog and "s-paused" in catalog
    skipped = page.items[0].id
    consumer = render("consumer.html", src, campaign_id=CAMPAIGN, can_edit=True,
                      c=views.consumer_detail(src, CAMPAIGN, skipped))
    assert "skipped by" in consumer and "owner on holiday" in consumer and "Undo the skip" in consumer

    css = (Path(__file__).parent.parent / "plugins/skein_airflow/portal/static/portal.css").read_text()
    colour = {name: next(line for line in css.splitlines() if f".s-{name}" in line).split("background:")[1].split(";")[0]
              for name in ("skipped", "blocked")}
    assert colour["skipped"] != colour["blocked"]


# -- defect 7: a burndown a person reads without help ------------------------------------------


def test_the_burndown_has_axes_dates_a_legend_and_explains_its_total(world):
    import xml.etree.ElementTree as ET

    from skein_airflow.portal.chart import burndown_svg
    from skein_airflow.portal.pages import chart

    store, src = world["store"], world["src"]
    ctx, summary = plan_run(world["campaign"], world["home"], store, "r1")
    before = views.burndown(store, CAMPAIGN)
    listed = views.consumer_page(store, CAMPAIGN, ConsumerFilter()).total
    assert before.listed == listed and before.total < listed  # the two numbers a person meets
    assert before.explained.startswith(f"{before.total} of the {listed} consumers read the source directly")
    assert burndown_svg(before, "analytics.plays") is None and chart(before, "analytics.plays") is None
    out_page = render_campaign(src, store)
    assert "Nothing applied yet" in out_page and before.explained in out_page

    approve_and_apply(ctx)
    after = views.burndown(store, CAMPAIGN)
    svg = burndown_svg(after, "analytics.plays")
    ET.fromstring(svg)  # well-formed SVG
    texts = " ".join(svg.split("<text")[1:]) if "<text" in svg else svg
    assert "consumers" in svg and "time (UTC)" in svg  # axis labels
    assert f"still reading analytics.plays (now {after.remaining})" in svg  # legend
    assert f"read it directly when planned ({after.total})" in svg
    assert any(str(after.points[0].at.year) in t or f"{after.points[0].at:%b}" in t
               or f"{after.points[0].at:%H:%M}" in t for t in [texts])  # dates on the time axis
    page = render_campaign(src, store)
    assert '<img src="data:image/svg+xml;base64,' in page and "Nothing applied yet" not in page


def render_campaign(src, store) -> str:
    from skein_airflow.portal.api import CampaignOut
    from skein_airflow.portal.pages import chart

    detail = views.campaign_detail(src, CAMPAIGN)
    out = CampaignOut(detail=detail, dag_id="skein__plays-v2", can_edit=False, can_approve=False,
                      approval_request=None)
    burndown = views.burndown(store, CAMPAIGN)
    return render("campaign.html", src, out=out, d=detail, page=views.consumer_page(store, CAMPAIGN, ConsumerFilter()),
                  filters=dict.fromkeys(("status", "owner", "tier", "kind", "wave", "search")),
                  burndown=burndown, chart=chart(burndown, detail.row.source), me="alice")


# -- bulk actions, CSV export, owner pages ------------------------------------------------------


def test_bulk_skip_of_an_owners_consumers_is_one_audited_action(world):
    import csv
    import io

    store, src = world["store"], world["src"]
    plan_run(world["campaign"], world["home"], store, "r1")
    before = statuses(store)
    page = views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=500).items
    owner = next(c.owner for c in page if c.status == "pending")
    owned = [c.id for c in page if c.owner == owner]
    result = views.bulk_control(store, CAMPAIGN, "skip", "alice", owner=owner, reason="team offsite")
    holdable = [cid for cid in owned if before[cid] not in ("escalated",)]  # an agent's escalation is a plan, not a hold
    assert result.done == holdable and set(result.refused) == set(owned) - set(holdable)
    events = store.events(CAMPAIGN, actions=(Action.CONSUMER_SKIPPED,))
    assert {e.consumer for e in events} == set(holdable)
    assert {(e.actor, e.detail["message"], e.detail["bulk"]) for e in events} == {
        ("user:alice", "team offsite", result.bulk)}
    assert all(statuses(store)[cid] == "skipped" for cid in holdable)
    again = views.bulk_control(store, CAMPAIGN, "skip", "alice", ids=holdable[:1])
    assert again.done == [] and "already skipped" in again.refused[holdable[0]]
    released = views.bulk_control(store, CAMPAIGN, "release", "bob", ids=holdable)
    assert released.done == holdable and all(statuses(store)[c] == before[c] for c in holdable)
    retried = views.bulk_control(store, CAMPAIGN, "retry", "bob", ids=holdable[:1])
    assert retried.done == [] and "has not failed" in retried.refused[holdable[0]]

    rows = list(csv.DictReader(io.StringIO(views.consumers_csv(store, CAMPAIGN, ConsumerFilter(owner=owner)))))
    assert [r["id"] for r in rows] == owned and {r["owner"] for r in rows} == {owner}
    assert all(r["status"] == before[r["id"]] for r in rows)
    assert views.bulk.csv_cell("=cmd()") == "'=cmd()"

    progress = views.owner_progress(src, owner)
    assert [(p.campaign, p.consumers) for p in progress] == [(CAMPAIGN, len(owned))]
    assert owner in views.owners(src)
    html = render("owner.html", src, owner=owner, rows=progress)
    assert f'data-campaign="{CAMPAIGN}"' in html and f"?owner={owner}" in html.replace("%2F", "/")
    detail = views.campaign_detail(src, CAMPAIGN)
    from skein_airflow.portal.api import CampaignOut

    out = CampaignOut(detail=detail, dag_id="skein__plays-v2", can_edit=True, can_approve=False,
                      approval_request=None)
    campaign = render("campaign.html", src, out=out, d=detail, page=views.consumer_page(store, CAMPAIGN, ConsumerFilter()),
                      filters=dict.fromkeys(("status", "owner", "tier", "kind", "wave", "search")),
                      burndown=views.burndown(store, CAMPAIGN), chart=None, me="alice")
    assert 'form="bulk" name="consumers"' in campaign and "consumers.csv" in campaign
    assert f"/skein/owners/{owner}" in campaign


def test_waves_are_not_rebuilt_once_one_has_started(world):
    """Consumers held when the run asks, released after the canary ran: a later wave's
    approval moves nobody into the canary that already ran (it would never be applied)."""
    from skein.pipeline import rebuild_waves

    store = world["store"]
    ctx, summary = plan_run(world["campaign"], world["home"], store, "r1")
    held = summary.waves["everyone"][-12:]
    for cid in held:
        views.skip_consumer(store, CAMPAIGN, cid, "bob", "later")
    rebuild_waves(ctx)  # the campaign's approval: the canary from the eligible consumers
    record_decision(ctx, "Approve all", "alice")
    assert start_wave(ctx, "canary") is None
    for batch in wave_batches(ctx, "canary", "default"):
        apply_wave(ctx, "canary", batch)
    frozen = ctx.files.waves()
    for cid in held:
        views.release_consumer(store, CAMPAIGN, cid, "bob", "now")
    state = rebuild_waves(ctx)  # the next wave's approval
    assert ctx.files.waves() == frozen and state.waves == frozen
    assert set(held) <= set(frozen["everyone"])  # released in time for the last wave


def test_a_summary_that_cannot_be_written_fails_no_step(world, caplog):
    """The live summary is a report: a run directory missing waves.json (a crash between two
    files) or an unwritable folder leaves the step's outcome alone."""
    from skein.pipeline import finalize

    ctx, _ = plan_run(world["campaign"], world["home"], world["store"], "r1")
    (ctx.directory / "waves.json").unlink()
    assert finalize(ctx, "dry_run")["status"] == "dry_run"
    assert "not rewritten after the run finished" in caplog.text
