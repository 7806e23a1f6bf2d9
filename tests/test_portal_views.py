"""The portal's engine side (``skein.views``, ``skein.controls``) on the demo fleet, without
Airflow: the read models follow a real run step by step, and a person's controls change what
the engine applies (a pause stops a wave at its next consumer, a skipped or escalated
consumer is in no wave), each audited with who.

One run is walked through in order by the ``walk`` fixture; the tests read what it saw.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from skein import controls, views
from skein.audit import Action
from skein.pipeline import (
    apply_wave,
    discover,
    finalize,
    monitor_wave,
    record_decision,
    rewrite_consumers,
    simulate_consumers,
    start_run,
    start_wave,
    summarize,
    wave_batches,
)
from skein.store import CampaignStore
from skein.views.consumers import ConsumerFilter

CAMPAIGN = "plays-v2"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    from skein.demo.fleet import build_demo_fleet

    out = tmp_path_factory.mktemp("portal-views") / "fleet"
    build_demo_fleet(out, consumers=40, seed=7)
    return out


def plan_run(campaign: Path, home: Path, store: CampaignStore, run_id: str):
    ctx = start_run(campaign, run_id, store=store, home=home, actor="task:test")
    ctx.record_start(dry_run=False, waves=None, error_threshold=None, consumer_filter=None)
    ids = discover(ctx)
    rewrite_consumers(ctx, ids)
    simulate_consumers(ctx, ids)
    return ctx, summarize(ctx)


def approve_and_apply(ctx) -> dict:
    """Approve all, apply and monitor every wave, finalize: the rest of a run."""
    record_decision(ctx, "Approve all", "alice")
    for wave in ("canary", "everyone"):
        assert start_wave(ctx, wave) is None
        for batch in wave_batches(ctx, wave, "default"):
            apply_wave(ctx, wave, batch)
        monitor_wave(ctx, wave)
    return finalize(ctx)


def state(src) -> str:
    return views.catalog_row(src, CAMPAIGN).state


@pytest.fixture(scope="module")
def walk(fleet, tmp_path_factory):
    """Plan, ask, approve; skip one and escalate another consumer of the second wave; apply
    the canary; pause half way through the second wave; resume; a second run."""
    root = tmp_path_factory.mktemp("walk")
    shutil.copytree(fleet, root / "fleet", symlinks=True)
    campaign, home = root / "fleet" / "campaigns" / f"{CAMPAIGN}.yaml", root / "home"
    home.mkdir()
    store = CampaignStore(f"sqlite:///{home / 'store.db'}")
    src = views.Sources(store=store, home=home, campaign_files=(campaign,))
    seen = {"not started": state(src)}
    ctx, summary = plan_run(campaign, home, store, "r1")
    seen["planned"] = state(src)
    ctx.record(Action.APPROVAL_REQUESTED, approvers=["alice"])
    seen["asked"] = state(src)
    seen["approval"] = views.campaign_detail(src, CAMPAIGN).approval
    record_decision(ctx, "Approve all", "alice")
    seen["approved"] = state(src)
    patched = [c for c in summary.waves["everyone"] if c in {i.id for i in summary.plan.with_status("patched")}]
    skipped, escalated = patched[0], patched[1]
    views.skip_consumer(store, CAMPAIGN, skipped, "alice", "owner asked to wait")
    views.escalate_consumer(store, CAMPAIGN, escalated, "bob", "needs a human review")
    assert start_wave(ctx, "canary") is None
    for batch in wave_batches(ctx, "canary", "default"):
        apply_wave(ctx, "canary", batch)
    monitor_wave(ctx, "canary")
    assert start_wave(ctx, "everyone") is None
    batches = wave_batches(ctx, "everyone", "default")
    everyone = [cid for batch in batches for cid in batch]
    pause_at = everyone[len(everyone) // 2]

    def progress(step, done, total, consumer):  # the person pauses while the wave applies
        if consumer == pause_at:
            views.pause_campaign(store, CAMPAIGN, "bob", "owners asked to wait")

    ctx.progress = progress
    applied = apply_wave(ctx, "everyone", everyone)
    seen["paused"] = state(src)
    health = monitor_wave(ctx, "everyone")
    outcome = finalize(ctx)
    detail = views.campaign_detail(src, CAMPAIGN)
    page = views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=500)
    views.resume_campaign(store, CAMPAIGN, "bob", None)
    seen["resumed"] = state(src)
    return {"store": store, "src": src, "home": home, "ctx": ctx, "summary": summary,
            "seen": seen, "skipped": skipped, "escalated": escalated, "everyone": everyone,
            "batches": batches, "pause_at": pause_at, "applied": applied, "health": health,
            "outcome": outcome, "detail": detail, "page": page, "campaign": campaign}


def test_the_campaign_state_follows_the_run(walk):
    seen = walk["seen"]
    assert [seen[k] for k in ("not started", "planned", "asked", "approved", "paused", "resumed")] == [
        "not started", "planned", "awaiting approval", "rolling out", "paused", "planned"]
    assert seen["approval"]["approvers"] == ["alice"] and seen["approval"]["run_id"] == "r1"


def test_skipped_and_escalated_consumers_are_in_no_wave(walk):
    store, skipped, escalated = walk["store"], walk["skipped"], walk["escalated"]
    assert skipped not in walk["everyone"] and escalated not in walk["everyone"]
    held = [e for e in store.events(CAMPAIGN, "r1", actions=(Action.HELD,))]
    assert {(e.consumer, e.wave) for e in held} == {(skipped, "everyone"), (escalated, "everyone")}
    assert "skipped by user:alice: owner asked to wait" in [e.detail["message"] for e in held]
    applied = {e.consumer for e in store.events(CAMPAIGN, actions=(Action.APPLIED,))}
    assert skipped not in applied and escalated not in applied
    statuses = {c.id: c.status for c in walk["page"].items}
    assert statuses[skipped] == "skipped" and statuses[escalated] == "escalated"


def test_a_pause_stops_the_wave_at_the_next_consumer(walk):
    store, everyone, pause_at = walk["store"], walk["everyone"], walk["pause_at"]
    rest = everyone[everyone.index(pause_at):]
    assert walk["applied"].paused == rest
    stopped = store.events(CAMPAIGN, "r1", actions=(Action.APPLY_PAUSED,))
    assert len(stopped) == 1 and stopped[0].detail["consumers"] == rest
    assert stopped[0].detail["message"].startswith("campaign paused by user:bob")
    touched = {e.consumer for e in store.events(CAMPAIGN, "r1") if e.action in (
        Action.APPLY_STARTED, Action.APPLIED, Action.VERIFIED, Action.APPLY_FAILED)}
    assert not touched & set(rest)
    assert set(everyone[:everyone.index(pause_at)]) <= touched
    # the monitor checks only what was applied; the run ends "paused", not failed
    assert walk["health"].passed and walk["health"].checked == everyone.index(pause_at)
    assert walk["outcome"]["status"] == "paused"
    assert views.runs(store, CAMPAIGN)[-1].status == "paused"


def test_a_paused_campaign_starts_no_wave(walk, tmp_path):
    store, ctx = walk["store"], walk["ctx"]
    views.pause_campaign(store, CAMPAIGN, "carol", None)
    try:
        assert start_wave(ctx, "everyone") == "campaign paused by user:carol"
        assert wave_batches(ctx, "everyone", "default") == []
        assert apply_wave(ctx, "everyone", walk["everyone"][-1:]).paused == walk["everyone"][-1:]
    finally:
        views.resume_campaign(store, CAMPAIGN, "carol", None)
        ctx.release_run()  # apply_wave claimed the finished run again


def test_controls_are_audited_with_who_and_refuse_what_does_not_apply(walk):
    store, skipped = walk["store"], walk["skipped"]
    events = store.events(CAMPAIGN, controls.NO_RUN)
    assert [(str(e.action), e.actor) for e in events][:4] == [
        ("consumer_skipped", "user:alice"), ("consumer_escalated", "user:bob"),
        ("campaign_paused", "user:bob"), ("campaign_resumed", "user:bob")]
    with pytest.raises(controls.ControlError, match="already skipped"):
        views.skip_consumer(store, CAMPAIGN, skipped, "bob", None)
    with pytest.raises(controls.ControlError, match="not a consumer"):
        views.skip_consumer(store, CAMPAIGN, "nowhere/x.sql", "bob", None)
    applied = next(e.consumer for e in store.events(CAMPAIGN, actions=(Action.APPLIED,)))
    with pytest.raises(controls.ControlError, match="already applied"):
        views.escalate_consumer(store, CAMPAIGN, applied, "bob", "too late")
    with pytest.raises(controls.ControlError, match="not paused"):
        views.resume_campaign(store, CAMPAIGN, "bob", None)


def test_campaign_detail_counts_waves_and_owners(walk):
    detail, page = walk["detail"], walk["page"]
    assert page.total == len(page.items) == detail.row.consumers == sum(detail.row.counts.values())
    assert sum(o.consumers for o in detail.owners) == page.total
    by_status = {}
    for item in page.items:
        by_status[item.status] = by_status.get(item.status, 0) + 1
    assert by_status == detail.row.counts
    canary, everyone = detail.waves
    assert (canary.name, canary.decision, canary.verdict) == ("canary", "started", "passed")
    assert everyone.verdict == "passed" and everyone.error_rate == 0.0
    assert detail.row.state == "paused" and detail.row.paused_by == "user:bob"
    assert {"escalated", "skipped", "applied", "pending"} <= set(detail.facets.statuses)
    assert detail.facets.waves == ["canary", "everyone"]


def test_consumer_pages_filter_and_page_in_sql(walk):
    store = walk["store"]
    everything = walk["page"].items
    first = views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=5, offset=0)
    second = views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=5, offset=5)
    assert [c.id for c in first.items + second.items] == [c.id for c in everything[:10]]
    assert [c.order for c in everything] == sorted(c.order for c in everything)
    owner = everything[0].owner
    mine = views.consumer_page(store, CAMPAIGN, ConsumerFilter(owner=owner, status="applied"), limit=500)
    assert mine.total == sum(c.owner == owner and c.status == "applied" for c in everything)
    assert all(c.owner == owner and c.status == "applied" for c in mine.items)
    tier = views.consumer_page(store, CAMPAIGN, ConsumerFilter(tier=1, kind="view", wave="canary"))
    assert all((c.tier, c.kind, c.wave) == (1, "view", "canary") for c in tier.items)
    found = views.consumer_page(store, CAMPAIGN, ConsumerFilter(search="%"))
    assert found.total == 0  # LIKE's wildcards are matched literally
    assert views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=10_000).limit == 500


def test_consumer_detail_has_the_diff_dry_run_history_and_commit(walk):
    src, store = walk["src"], walk["store"]
    applied = [c for c in walk["page"].items if c.status == "applied" and c.kind != "view"][0]
    detail = views.consumer_detail(src, CAMPAIGN, applied.id)
    assert detail.diff.startswith(f"--- a/{applied.id}") and "analytics_v2.plays" in detail.diff
    assert detail.simulation["status"] == "pass" and "expectations" in detail.simulation
    assert detail.agent["kind"] == "patch"
    actions = [e.action for e in detail.history]
    assert actions[0] == "patched" and "applied" in actions
    assert detail.produced.kind == "file" and detail.produced.commits
    assert any(f"skein({CAMPAIGN})" in c["subject"] for c in detail.produced.commits)
    sha = detail.produced.commits[0]["sha"]
    repo = Path(detail.produced.repo)
    assert subprocess.run(["git", "-C", str(repo), "cat-file", "-t", sha], capture_output=True,
                          text=True, check=True).stdout.strip() in ("commit",)
    assert views.consumer_detail(src, CAMPAIGN, "nowhere/x.sql") is None


def test_retry_marks_failed_consumers_for_the_next_run(walk, tmp_path):
    store = walk["store"]
    victim = walk["applied"].paused[-1]  # not applied: the next run plans it again
    store.record(CAMPAIGN, "r1", "task:test", Action.APPLY_FAILED, consumer=victim, message="boom")
    assert views.retry_failed(store, CAMPAIGN, "alice") == [victim]
    assert views.retry_failed(store, CAMPAIGN, "alice") == []  # marked once
    assert views.consumer_detail(walk["src"], CAMPAIGN, victim).retry_pending
    assert views.campaign_detail(walk["src"], CAMPAIGN).pending_retries == 1
    marked = controls.pending_retries(store, CAMPAIGN, run_id="r2")
    assert list(marked) == [victim] and marked[victim].actor == "user:alice"
    walk["retry_victim"] = victim


def test_burndown_counts_down_what_was_applied(walk):
    store = walk["store"]
    series = views.burndown(store, CAMPAIGN)
    applied_direct = {c.id for c in walk["page"].items if c.status == "applied" and c.impact == "direct"}
    assert series.points[0].remaining == series.total
    assert series.remaining == series.total - len(applied_direct) == series.points[-1].remaining
    remaining = [p.remaining for p in series.points]
    assert remaining == sorted(remaining, reverse=True) and len(set(remaining)) > 2
    assert len(views.burndown(store, CAMPAIGN, max_points=3).points) == 3


def test_the_next_run_applies_the_rest_and_still_holds_the_held(walk):
    store, home, campaign = walk["store"], walk["home"], walk["campaign"]
    ctx, summary = plan_run(campaign, home, store, "r2")
    discovered = store.events(CAMPAIGN, "r2", actions=(Action.DISCOVERED,))[0]
    assert discovered.detail["retrying"] == [walk["retry_victim"]]  # the mark, taken by this run
    assert controls.pending_retries(store, CAMPAIGN) == {}
    assert approve_and_apply(ctx)["status"] == "finished"
    page = views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=500)
    statuses = {c.id: c.status for c in page.items}
    assert statuses[walk["skipped"]] == "skipped" and statuses[walk["escalated"]] == "escalated"
    assert not {cid for cid in walk["applied"].paused if statuses.get(cid) == "pending"}
    row = views.catalog_row(walk["src"], CAMPAIGN)  # not done: two consumers wait for a person
    human = sum(row.counts.get(s, 0) for s in ("escalated", "blocked", "failed", "rolled_back"))
    assert row.state == "applied" and row.left.startswith(f"{human} need a human (")
    assert row.left.endswith(", 1 skipped") and row.counts["escalated"] >= 1
    view = next(c for c in page.items if c.status == "applied" and c.kind == "view")
    produced = views.consumer_detail(walk["src"], CAMPAIGN, view.id).produced
    assert produced.kind == "view" and produced.view == view.id.split("/", 1)[1] and produced.after_hash


def test_the_catalog_says_when_the_campaign_runs_next(walk, tmp_path):
    """The demo waits for a trigger; a nightly campaign shows its next run, none while paused."""
    import yaml

    from skein.views.campaigns import catalog_row

    src = walk["src"]
    assert (catalog_row(src, CAMPAIGN).schedule, catalog_row(src, CAMPAIGN).next_run) == (None, None)
    nightly = tmp_path / f"{CAMPAIGN}.yaml"
    spec = yaml.safe_load(walk["campaign"].read_text())
    spec["rollout"]["schedule"] = "0 2 * * *"
    spec["warehouse"] = "duckdb:///" + str(walk["campaign"].parent.parent / "warehouse.duckdb")
    nightly.write_text(yaml.safe_dump(spec))
    row = catalog_row(views.Sources(store=src.store, home=src.home, campaign_files=(nightly,)), CAMPAIGN)
    assert row.schedule == "0 2 * * *"
    assert row.next_run is not None and (row.next_run.hour, row.next_run.minute) == (2, 0)
    views.pause_campaign(src.store, CAMPAIGN, "bob", "a moment")
    try:
        assert catalog_row(views.Sources(store=src.store, home=src.home, campaign_files=(nightly,)),
                           CAMPAIGN).next_run is None
    finally:
        views.resume_campaign(src.store, CAMPAIGN, "bob", None)


def test_a_released_consumer_is_applied_by_the_next_run(walk):
    """Undo of a skip: audited with who and why, the consumer shows pending again (nobody holds
    it), and the next run applies it; the escalated one stays held. Releasing what is not held
    is refused."""
    store, home, campaign = walk["store"], walk["home"], walk["campaign"]
    skipped, escalated = walk["skipped"], walk["escalated"]
    views.release_consumer(store, CAMPAIGN, skipped, "carol", "the owner is back")
    release = store.latest(CAMPAIGN, (Action.CONSUMER_RELEASED,), consumer=skipped)
    assert (release.actor, release.detail["message"]) == ("user:carol", "the owner is back")
    summary = views.consumer_page(store, CAMPAIGN, ConsumerFilter(search=skipped), limit=5).items
    assert [(c.id, c.status, c.held_by) for c in summary] == [(skipped, "pending", None)]
    with pytest.raises(controls.ControlError, match="nothing to release"):
        views.release_consumer(store, CAMPAIGN, skipped, "carol", None)
    with pytest.raises(controls.ControlError, match="nothing to release"):
        views.release_consumer(store, CAMPAIGN, walk["retry_victim"], "carol", None)

    ctx, _ = plan_run(campaign, home, store, "r3")
    assert approve_and_apply(ctx)["status"] == "finished"
    applied = {e.consumer for e in store.events(CAMPAIGN, "r3", actions=(Action.APPLIED,))}
    held = {e.consumer for e in store.events(CAMPAIGN, "r3", actions=(Action.HELD,))}
    assert skipped in applied and escalated not in applied and held == {escalated}
    # the consumer index, rebuilt from the log, says the same as the one written with it
    before = {c.id: (c.status, c.held_by) for c in views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=500).items}
    store.rebuild_latest()
    after = {c.id: (c.status, c.held_by) for c in views.consumer_page(store, CAMPAIGN, ConsumerFilter(), limit=500).items}
    assert before == after and after[skipped] == ("applied", None) and after[escalated] == ("escalated", "user:bob")
