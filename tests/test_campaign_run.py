"""Campaign runs end to end (``skein.pipeline``, ``skein run``) on the demo fleet: real git
repositories, a real DuckDB warehouse, the real simulation and monitoring.

The fleet is built once per module; every test that changes it works on its own copy, with
its own Skein home and campaign store under ``tmp_path``. One run goes through the installed
``skein`` executable; the others call the same CLI entry point or the steps in this process
(the data libraries are then loaded once, which keeps the module around a minute).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from conftest import GIT_ENV
from skein.apply import GitApplier
from skein.cli import main as skein_main
from skein.pipeline import (
    apply_wave,
    discover,
    finalize,
    monitor_wave,
    record_decision,
    rewrite_consumers,
    rollback,
    run_campaign,
    simulate_consumers,
    start_run,
    summarize,
    target_for,
)
from skein.rundir import file_name
from skein.store import CampaignStore, sha256

SKEIN = Path(sys.executable).with_name("skein")
CAMPAIGN_ID = "plays-v2"
BRANCH = f"skein/{CAMPAIGN_ID}"


# --- the fleet and what it looks like -------------------------------------------------------

@pytest.fixture(scope="module")
def fleet_template(tmp_path_factory) -> Path:
    from skein.demo.fleet import build_demo_fleet

    out = tmp_path_factory.mktemp("template") / "fleet"
    build_demo_fleet(out, consumers=40, seed=7)
    return out


def copy_fleet(template: Path, root: Path) -> Path:
    """A private copy of the fleet; returns its campaign file."""
    shutil.copytree(template, root / "fleet", symlinks=True)
    return root / "fleet" / "campaigns" / "plays-v2.yaml"


def fleet_of(campaign: Path) -> Path:
    return campaign.parent.parent


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          env={**os.environ, **GIT_ENV}).stdout.decode()


def repos(fleet: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((fleet / "repos").iterdir()) if (p / ".git").exists()}


def views(fleet: Path) -> dict[str, str]:
    con = duckdb.connect(str(fleet / "warehouse.duckdb"), read_only=True)
    try:
        return {f"{s}.{v}": sql for s, v, sql in con.execute(
            "SELECT schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()}
    finally:
        con.close()


def view_rows(fleet: Path) -> dict[str, list]:
    con = duckdb.connect(str(fleet / "warehouse.duckdb"), read_only=True)
    try:
        names = [f"{s}.{v}" for s, v in con.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
        return {n: sorted(con.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}
    finally:
        con.close()


def snapshot(fleet: Path) -> dict:
    """Everything a run may change: every work-tree file's bytes, every repository's
    checked-out branch, tree and status, and every view's DDL."""
    files, state = {}, {}
    for name, repo in repos(fleet).items():
        for path in sorted(repo.rglob("*")):
            if path.is_file() and ".git" not in path.relative_to(repo).parts:
                files[f"{name}/{path.relative_to(repo).as_posix()}"] = path.read_bytes()
        state[name] = {"branch": git(repo, "symbolic-ref", "--short", "HEAD").strip(),
                       "tree": git(repo, "rev-parse", "HEAD^{tree}").strip(),
                       "status": git(repo, "status", "--porcelain")}
    return {"files": files, "repos": state, "views": views(fleet)}


def heads(fleet: Path) -> dict[str, str]:
    return {name: git(repo, "rev-parse", "HEAD").strip() for name, repo in repos(fleet).items()}


def file_path(fleet: Path, consumer: str) -> Path:
    repo, _, path = consumer.partition("/")
    return fleet / "repos" / repo / path


def is_view(consumer: str) -> bool:
    return consumer.startswith("warehouse/")


def patched_bytes(run_dir: Path, consumer: str) -> bytes:
    return (run_dir / "patched" / file_name(consumer)).read_bytes()


def applied_counts(store: CampaignStore, run_id: str | None = None) -> Counter:
    return Counter(e.consumer for e in store.events(CAMPAIGN_ID, run_id, actions=("applied",)))


def merges_touching(fleet: Path, consumer: str) -> int:
    repo, _, path = consumer.partition("/")
    return len(git(fleet / "repos" / repo, "log", "--merges", "--first-parent", "--format=%H",
                   "-m", "--", path).split())


def cli(*args: str, store: str) -> int:
    return skein_main(["run", *args, "--no-soak", "--json", "--store", store])


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SKEIN_HOME", str(home))
    monkeypatch.delenv("SKEIN_STORE_URL", raising=False)
    return home


def store_url(home: Path) -> str:
    return f"sqlite:///{home / 'store.db'}"


def planned_steps(campaign: Path, home: Path, run_id: str, consumer_filter: str | None = None):
    """start_run .. summarize, as the DAG's first tasks run them."""
    home.mkdir(parents=True, exist_ok=True)
    ctx = start_run(campaign, run_id, store=CampaignStore(store_url(home)), home=home,
                    actor="task:test")
    ids = discover(ctx, consumer_filter)
    rewrite_consumers(ctx, ids)
    simulate_consumers(ctx, ids)
    return ctx, summarize(ctx)


# --- one whole run ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def first_run(fleet_template, tmp_path_factory):
    """``skein run`` on a copy of the fleet (the CLI's entry point, in this process)."""
    root = tmp_path_factory.mktemp("first-run")
    campaign = copy_fleet(fleet_template, root)
    fleet, home = fleet_of(campaign), root / "home"
    home.mkdir()
    before, rows_before = snapshot(fleet), view_rows(fleet)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("SKEIN_HOME", str(home))
        mp.delenv("SKEIN_STORE_URL", raising=False)
        mp.chdir(root)
        returncode = skein_main(["run", str(campaign), "--run-id", "first", "--no-soak", "--approve", "all", "--json"])
    store = CampaignStore(store_url(home))  # the default store: SQLite in SKEIN_HOME
    run_dir = home / "runs" / CAMPAIGN_ID / "first"
    return {"campaign": campaign, "fleet": fleet, "home": home, "store": store, "run_dir": run_dir,
            "returncode": returncode, "outcome": json.loads(out.getvalue()),
            "before": before, "rows_before": rows_before, "after": snapshot(fleet),
            "heads": heads(fleet), "events": store.events(CAMPAIGN_ID, "first"),
            "plan": json.loads((run_dir / "plan.json").read_text()),
            "waves": json.loads((run_dir / "waves.json").read_text()),
            "summary_md": (run_dir / "summary.md").read_text()}  # a later rerun rewrites it


def test_a_small_campaign_is_few_task_instances(first_run):
    """The 40-consumer demo: each wave is one apply instance, agents and simulation a few
    instances of >= 10 consumers (skein.batches), every consumer in exactly one of each."""
    from skein.batches import MIN_WORK
    from skein.pipeline import start_run, work_batches

    run_dir, waves = first_run["run_dir"], first_run["waves"]
    applying = json.loads((run_dir / "apply_batches.json").read_text())
    assert set(applying) == set(waves)
    for wave, groups in applying.items():
        assert list(groups) == ["default"] and groups["default"] == [waves[wave]], wave
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKEIN_HOME", str(first_run["home"]))
        ctx = start_run(first_run["campaign"], "first", actor="test")
        work = work_batches(ctx)
        impacted = [c.id for c in ctx.report().consumers]
    assert 1 < len(work) <= len(impacted) // MIN_WORK
    assert sorted(sum(work, [])) == sorted(impacted)


def test_run_applies_every_verified_patch_exactly_once(first_run):
    plan, events, fleet = first_run["plan"], first_run["events"], first_run["fleet"]
    expected = {i["id"] for i in plan["items"] if i["status"] == "patched" and i["simulation"] == "pass"}
    assert len(expected) >= 15  # the demo fleet's 40 consumers: a real campaign, not a toy
    assert any(is_view(c) for c in expected) and any(not is_view(c) for c in expected)

    applied = Counter(e.consumer for e in events if e.action == "applied")
    assert applied == Counter({cid: 1 for cid in expected})
    assert [e for e in events if e.action in ("apply_failed", "monitor_failed", "wave_failed",
                                              "rollback_started")] == []
    outcome = first_run["outcome"]
    assert outcome["status"] == "finished" and outcome["applied"] == len(expected)
    assert outcome["escalated"] == plan["counts"]["escalated"] > 0
    assert first_run["returncode"] == 3  # done, but a human must look at the escalations


def test_skein_plan_is_the_first_steps_of_skein_run(first_run, fleet_template, tmp_path, capsys):
    """``skein plan`` and ``skein run`` go through the same steps: on the same fleet they
    freeze the same plan, waves, patches and evidence verdicts."""
    campaign = copy_fleet(fleet_template, tmp_path)
    out = tmp_path / "plan"
    assert skein_main(["plan", str(campaign), "--out", str(out)]) == 3
    assert "escalated" in capsys.readouterr().out
    run_dir = first_run["run_dir"]
    for name in ("plan.json", "waves.json", "agents.json", "discovery.json", "apply_batches.json"):
        planned, ran = json.loads((out / name).read_text()), json.loads((run_dir / name).read_text())
        assert planned == ran, name
    assert sorted(p.name for p in (out / "patches").iterdir()) == \
        sorted(p.name for p in (run_dir / "patches").iterdir())
    for path in (out / "patches").iterdir():
        assert path.read_bytes() == (run_dir / "patches" / path.name).read_bytes(), path.name
    verdicts = {p.name: json.loads(p.read_text())["status"] for p in (out / "simulation").iterdir()}
    assert verdicts == {p.name: json.loads(p.read_text())["status"]
                        for p in (run_dir / "simulation").iterdir()}
    assert not (out / "retry").exists()  # no LLM agent: nothing is retried


def test_run_files_are_the_planned_patches(first_run):
    fleet, run_dir, events = first_run["fleet"], first_run["run_dir"], first_run["events"]
    applied = {e.consumer: e for e in events if e.action == "applied"}
    files = [c for c in applied if not is_view(c)]
    for cid in files:
        new = patched_bytes(run_dir, cid)
        assert file_path(fleet, cid).read_bytes() == new, cid
        repo, _, path = cid.partition("/")
        assert subprocess.run(["git", "-C", str(fleet / "repos" / repo), "cat-file", "blob", f"HEAD:{path}"],
                              check=True, capture_output=True).stdout == new
        assert applied[cid].after_hash == sha256(new)
        assert applied[cid].before_hash == sha256(first_run["before"]["files"][cid])
        assert merges_touching(fleet, cid) == 1, cid
    # nothing else changed: escalated and unchanged consumers keep their bytes
    after, before = first_run["after"]["files"], first_run["before"]["files"]
    assert {k for k in after if after[k] != before.get(k)} == set(files)
    assert set(after) == set(before)
    for name, repo in repos(fleet).items():
        assert first_run["after"]["repos"][name]["status"] == "", name
        assert first_run["after"]["repos"][name]["branch"] == "main"
        touched = [c for c in files if c.startswith(name + "/")]
        merges = git(repo, "log", "--merges", "--format=%s").splitlines()
        assert len(merges) == len(touched)
        assert all(m.startswith(f"Merge {BRANCH}: skein({CAMPAIGN_ID}): ") and
                   m.endswith("reads analytics_v2.plays instead of analytics.plays") for m in merges)
        if touched:
            assert git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{BRANCH}").strip()


def test_run_views_read_the_target_with_the_same_rows(first_run):
    fleet, events = first_run["fleet"], first_run["events"]
    applied = {e.consumer: e for e in events if e.action == "applied" and is_view(e.consumer)}
    assert applied
    now, before = first_run["after"]["views"], first_run["before"]["views"]
    for cid, event in applied.items():
        view = cid.split("/", 1)[1]
        assert "analytics_v2.plays" in now[view] and "analytics.plays" not in now[view]
        assert event.after_hash == sha256(now[view].encode())  # the engine's own rendering
        assert event.before_hash == sha256(before[view].encode())
    assert {v for v in now if now[v] != before[v]} == {c.split("/", 1)[1] for c in applied}
    # every view, including those reading the replaced ones, returns the rows it returned
    assert view_rows(fleet) == first_run["rows_before"]


def test_run_audit_is_in_order(first_run):
    events, waves = first_run["events"], first_run["waves"]
    actions = [e.action for e in events]
    assert actions[0] == "run_started" and actions[-1] == "finished"
    assert [e.id for e in events] == sorted(e.id for e in events)

    def first(action, **where):
        return next(n for n, e in enumerate(events) if e.action == action and
                    all(getattr(e, k) == v for k, v in where.items()))

    def last(action, **where):
        return max(n for n, e in enumerate(events) if e.action == action and
                   all(getattr(e, k) == v for k, v in where.items()))

    assert (first("discovered") < last("patched") < first("simulated") < first("planned")
            < first("approved") < first("apply_started") < first("applied"))
    assert last("applied") < last("wave_passed") < first("finished")
    assert actions.count("finished") == 1 and actions.count("approved") == 1
    names = list(waves)
    assert names == ["canary", "everyone"] and waves["canary"] and waves["everyone"]
    for number, wave in enumerate(names):  # a wave is applied, then monitored, then the next
        assert last("applied", wave=wave) < first("wave_passed", wave=wave)
        if number:
            assert first("wave_passed", wave=names[number - 1]) < first("apply_started", wave=wave)
    for e in events:
        if e.action == "applied":
            started = first("apply_started", consumer=e.consumer)
            assert started < events.index(e) and events[started].before_hash == e.before_hash
    assert events[-1].detail["status"] == "finished"


def test_rerun_same_run_id_and_new_run_apply_nothing_more(first_run, monkeypatch):
    """After a run finished, running it again (same id: a retried DAG run) or a new run writes
    nothing: no second ``applied``, no new commit, no view replaced."""
    store, campaign = first_run["store"], str(first_run["campaign"])
    monkeypatch.setenv("SKEIN_HOME", str(first_run["home"]))  # the same run directory
    url = store_url(first_run["home"])
    before_counts = applied_counts(store)

    assert cli(campaign, "--run-id", "first", "--approve", "all", store=url) in (0, 3)
    assert cli(campaign, "--run-id", "second", "--approve", "all", store=url) in (0, 3)

    assert applied_counts(store) == before_counts
    assert max(before_counts.values()) == 1
    for run_id in ("first", "second"):
        fresh = store.events(CAMPAIGN_ID, run_id)[len(first_run["events"]) if run_id == "first" else 0:]
        assert fresh and fresh[0].action == "run_started"
        assert [e for e in fresh if e.action in ("apply_started", "applied", "apply_failed",
                                                 "rolled_back")] == []
        assert fresh[-1].action == "finished" and fresh[-1].detail["status"] == "finished"
    assert heads(first_run["fleet"]) == first_run["heads"]
    assert snapshot(first_run["fleet"]) == first_run["after"]


# --- the steps one by one ----------------------------------------------------------------

def test_crash_between_apply_started_and_applied_is_not_written_twice(fleet_template, tmp_path, home):
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    before = snapshot(fleet)
    ctx, summary = planned_steps(campaign, home, "crash", "legacy-scripts/*")
    wave = "everyone"
    ids = summary.waves[wave]
    files = [c for c in ids if c in {p["id"] for p in json.loads((ctx.directory / "plan.json").read_text())["items"]
                                     if p["status"] == "patched"}]
    assert len(files) >= 3
    written, not_written = files[0], files[1]
    results, by_id = ctx.results(), ctx.catalog().by_id()

    # worker 1 died after the write, before recording it
    target = target_for(ctx, by_id[written])
    old, new = GitApplier().current(target), results[written].text.encode()
    ctx.store.put_blob(old)
    ctx.record("apply_started", consumer=written, wave=wave, before=sha256(old), after=sha256(new))
    GitApplier().write(target, new, "skein: written by the worker that died")
    # worker 2 died before the write
    old2 = GitApplier().current(target_for(ctx, by_id[not_written]))
    ctx.record("apply_started", consumer=not_written, wave=wave, before=sha256(old2),
               after=sha256(results[not_written].text.encode()))

    retried = apply_wave(ctx, wave, ids)

    assert written in retried.already and written not in retried.applied
    assert not_written in retried.applied
    assert set(retried.applied) | set(retried.already) == set(files) and retried.failed == {}
    counts = applied_counts(ctx.store, "crash")
    assert counts == Counter({cid: 1 for cid in files})
    recovered = ctx.store.events(CAMPAIGN_ID, "crash", consumer=written, actions=("applied",))[0]
    assert "interrupted" in recovered.detail["message"]
    assert (recovered.before_hash, recovered.after_hash) == (sha256(old), sha256(new))
    for cid in files:
        assert merges_touching(fleet, cid) == 1, cid
        assert file_path(fleet, cid).read_bytes() == patched_bytes(ctx.directory, cid)

    # the task retried once more: nothing written, nothing recorded as applied
    tips = heads(fleet)
    again = apply_wave(ctx, wave, ids)
    assert again.applied == [] and set(again.already) == set(files)
    assert heads(fleet) == tips
    assert applied_counts(ctx.store, "crash") == counts

    # and a rollback restores both, the one whose "applied" was missing included
    rolled = rollback(ctx, "test")
    assert rolled.verified and set(rolled.restored) == set(files)
    assert file_path(fleet, written).read_bytes() == old
    assert file_path(fleet, not_written).read_bytes() == old2
    assert snapshot(fleet) == before


def test_broken_target_after_the_canary_rolls_everything_back(fleet_template, tmp_path, home):
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    before = snapshot(fleet)
    # the view consumers and the files that deploy views: files of two repositories and a
    # warehouse view, in both waves
    ctx, summary = planned_steps(campaign, home, "broken", "*v_*")
    record_decision(ctx, "Approve all", "alice")

    canary = apply_wave(ctx, "canary", summary.waves["canary"])
    assert canary.applied and not canary.failed
    health = monitor_wave(ctx, "canary")
    assert health.passed and health.error_rate == 0.0

    con = duckdb.connect(str(fleet / "warehouse.duckdb"))  # the target's data goes wrong
    con.execute("DELETE FROM analytics_v2.plays WHERE play_id % 2 = 0")
    con.close()

    everyone = apply_wave(ctx, "everyone", summary.waves["everyone"])
    assert any(is_view(c) for c in everyone.applied) and not everyone.failed
    applied = set(canary.applied) | set(everyone.applied)
    assert snapshot(fleet) != before
    health = monitor_wave(ctx, "everyone")
    assert not health.passed and health.error_rate > health.threshold == 0.1

    rolled = rollback(ctx, f"wave everyone: error rate {health.error_rate:.0%}")

    assert rolled.verified and rolled.problems == {}
    assert set(rolled.restored) == applied
    order = [c.id for c in ctx.report().consumers]
    assert rolled.restored == sorted(applied, key=order.index, reverse=True)
    after = snapshot(fleet)
    assert after["files"] == before["files"]  # every byte of every file
    assert after["views"] == before["views"]  # the exact DDL the engine reports
    assert after["repos"] == before["repos"]  # same trees, clean, on main
    states = ctx.store.consumer_states(CAMPAIGN_ID, "broken")
    assert {c for c, e in states.items() if e.action == "rolled_back"} == applied
    for cid in applied:
        assert states[cid].after_hash == states[cid].before_hash
    actions = [e.action for e in ctx.store.events(CAMPAIGN_ID, "broken")]
    assert actions.index("wave_failed") < actions.index("rollback_started") < actions.index(
        "campaign_rolled_back")
    assert finalize(ctx)["status"] == "rolled_back"


@pytest.mark.slow
def test_skein_run_rolls_back_and_exits_5_when_the_target_is_missing(fleet_template, tmp_path, home):
    """The target dataset was dropped: the dry run still works from the campaign's forward
    query, but the canary cannot read the real target, so the run undoes it. Through the
    installed ``skein`` executable, its exit code included."""
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    con = duckdb.connect(str(fleet / "warehouse.duckdb"))
    con.execute("DROP TABLE analytics_v2.plays")
    con.close()
    before = snapshot(fleet)
    url = store_url(home)

    done = subprocess.run([str(SKEIN), "run", str(campaign), "--run-id", "missing", "--no-soak", "--json",
                           "--consumers", "legacy-scripts/*", "--store", url, "--approve", "all"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 5, done.stderr
    assert json.loads(done.stdout)["status"] == "rolled_back"

    store = CampaignStore(url)
    events = store.events(CAMPAIGN_ID, "missing")
    applied = {e.consumer for e in events if e.action == "applied"}
    assert applied and all(e.wave == "canary" for e in events if e.action == "applied")
    assert {e.consumer for e in events if e.action == "rolled_back"} == applied
    assert all("target analytics_v2.plays does not exist" in e.detail["message"]
               for e in events if e.action == "monitor_failed")
    actions = [e.action for e in events]
    assert "campaign_rolled_back" in actions and "wave_skipped" not in actions
    assert not any(e.wave == "everyone" and e.action == "apply_started" for e in events)
    assert events[-1].action == "finished" and events[-1].detail["status"] == "rolled_back"
    assert snapshot(fleet) == before
    for cid in applied:
        assert merges_touching(fleet, cid) == 2  # the change and its roll back, both visible


def test_a_consumer_changed_after_planning_fails_alone(fleet_template, tmp_path, home):
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    ctx, summary = planned_steps(campaign, home, "human", "sandbox/*")
    record_decision(ctx, "Approve all", "alice")
    everything = [c for wave in summary.waves.values() for c in wave]
    patched = [c for c in everything if c in {p["id"] for p in json.loads(
        (ctx.directory / "plan.json").read_text())["items"] if p["status"] == "patched"}]
    assert len(patched) >= 4
    committed, uncommitted = patched[-1], patched[-2]

    # a human commits a change to one file, and is editing another, after the plan
    repo = fleet / "repos" / "sandbox"
    human = file_path(fleet, committed).read_bytes() + b"-- tweaked by a human\n"
    file_path(fleet, committed).write_bytes(human)
    git(repo, "commit", "-q", "-am", "a human change")
    editing = file_path(fleet, uncommitted).read_bytes() + b"-- work in progress\n"
    file_path(fleet, uncommitted).write_bytes(editing)

    outcomes = {wave: apply_wave(ctx, wave, ids) for wave, ids in summary.waves.items()}

    failed = {c: m for o in outcomes.values() for c, m in o.failed.items()}
    assert set(failed) == {committed, uncommitted}
    assert "changed since it was planned" in failed[committed]
    assert "uncommitted changes" in failed[uncommitted]
    applied = [c for o in outcomes.values() for c in o.applied]
    assert sorted(applied) == sorted(set(patched) - {committed, uncommitted})
    for cid in applied:
        assert file_path(fleet, cid).read_bytes() == patched_bytes(ctx.directory, cid)
    assert file_path(fleet, committed).read_bytes() == human  # the human's work is untouched
    assert file_path(fleet, uncommitted).read_bytes() == editing
    assert git(repo, "status", "--porcelain").split() == ["M", uncommitted.split("/", 1)[1]]
    states = ctx.store.consumer_states(CAMPAIGN_ID, "human")
    assert {c for c, e in states.items() if e.action == "apply_failed"} == {committed, uncommitted}
    assert {c for c, e in states.items() if e.action == "applied"} == set(applied)
    # the changed file was never started: nothing for a rollback to put back
    assert not ctx.store.events(CAMPAIGN_ID, "human", consumer=committed, actions=("apply_started",))
    # the monitor counts both failures against their wave
    wave = next(w for w, ids in summary.waves.items() if committed in ids)
    health = monitor_wave(ctx, wave)
    assert {committed, uncommitted} & set(summary.waves[wave]) <= set(health.failed)
    assert health.error_rate >= 1 / len(summary.waves[wave])


# --- approval, dry run, waves, filters ----------------------------------------------------

@pytest.mark.parametrize("args,status,code", [
    (["--approve", "none"], "rejected", 5),
    (["--dry-run"], "dry_run", 3),
], ids=["rejected", "dry-run"])
def test_rejected_or_dry_run_applies_nothing(fleet_template, tmp_path, home, args, status, code):
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    before, tips = snapshot(fleet), heads(fleet)
    url = store_url(home)

    assert cli(str(campaign), "--run-id", "r", *args, "--consumers", "legacy-scripts/*", store=url) == code

    events = CampaignStore(url).events(CAMPAIGN_ID, "r")
    actions = Counter(e.action for e in events)
    assert actions["planned"] == 1 and actions["patched"] >= 5
    assert not {"apply_started", "applied", "apply_failed", "monitored", "wave_passed"} & set(actions)
    assert events[-1].action == "finished" and events[-1].detail["status"] == status
    assert ("rejected" in actions) == (status == "rejected")
    assert "approved" not in actions
    assert (home / "runs" / CAMPAIGN_ID / "r" / "plan.json").is_file()
    assert snapshot(fleet) == before and heads(fleet) == tips


def test_skein_run_applies_nothing_without_an_explicit_answer(fleet_template, tmp_path, home, capsys):
    """A bare ``skein run CAMPAIGN`` must not apply everything: it asks for --approve."""
    campaign = copy_fleet(fleet_template, tmp_path)
    before = snapshot(fleet_of(campaign))
    url = store_url(home)
    assert cli(str(campaign), "--run-id", "bare", store=url) == 2
    assert "--approve all|canary|none" in capsys.readouterr().err
    assert CampaignStore(url).events(CAMPAIGN_ID, "bare") == []
    assert snapshot(fleet_of(campaign)) == before


def test_approve_canary_applies_only_the_canary(fleet_template, tmp_path, home):
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    before = snapshot(fleet)
    url = store_url(home)

    assert cli(str(campaign), "--run-id", "c", "--approve", "canary", "--consumers", "legacy-scripts/*",
               store=url) == 3

    waves = json.loads((home / "runs" / CAMPAIGN_ID / "c" / "waves.json").read_text())
    assert waves["canary"] and len(waves["everyone"]) >= 3
    events = CampaignStore(url).events(CAMPAIGN_ID, "c")
    applied = [e for e in events if e.action == "applied"]
    assert applied and {e.consumer for e in applied} == set(waves["canary"])
    assert {e.wave for e in applied} == {"canary"}
    assert [e.wave for e in events if e.action == "wave_skipped"] == ["everyone"]
    assert [e.wave for e in events if e.action == "wave_passed"] == ["canary"]
    after = snapshot(fleet)
    changed = {k for k in after["files"] if after["files"][k] != before["files"][k]}
    assert changed == {c for c in waves["canary"] if not is_view(c)}
    assert after["views"] == before["views"] or any(is_view(c) for c in waves["canary"])
    assert events[-1].detail["status"] == "finished" and events[-1].detail["applied"] == len(applied)


def test_consumer_glob_limits_the_work(fleet_template, tmp_path, home):
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    before = snapshot(fleet)
    url = store_url(home)

    assert cli(str(campaign), "--run-id", "g", "--consumers", "sandbox/*", "--approve", "all", store=url) in (0, 3)

    events = CampaignStore(url).events(CAMPAIGN_ID, "g")
    worked_on = {e.consumer for e in events if e.consumer}
    applied = {e.consumer for e in events if e.action == "applied"}
    assert len(applied) >= 3 and all(fnmatch.fnmatch(c, "sandbox/*") for c in applied)
    # only the glob's consumers, and the upstream their simulation needs
    report = json.loads((home / "runs" / CAMPAIGN_ID / "g" / "discovery.json").read_text())
    ids = {c["id"] for c in report["consumers"]}
    matching = {i for i in ids if fnmatch.fnmatch(i, "sandbox/*")}
    upstream = {u for c in report["consumers"] for u in c["upstream"]}
    assert matching and ids - matching <= upstream and worked_on <= ids
    assert len(ids) < 15
    assert next(e for e in events if e.action == "discovered").detail["filter"] == "sandbox/*"
    after = snapshot(fleet)
    changed = {k for k in after["files"] if after["files"][k] != before["files"][k]}
    assert changed == applied
    assert after["views"] == before["views"]
    for name in after["repos"]:
        if name != "sandbox":
            assert after["repos"][name] == before["repos"][name]


def test_restarted_run_continues_where_it_stopped(fleet_template, tmp_path, home):
    """The scheduler died after the canary was applied: running the same run id again plans
    what is left and applies every consumer exactly once."""
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    ctx, summary = planned_steps(campaign, home, "restart", "legacy-scripts/*")
    record_decision(ctx, "Approve all", "alice")
    first = apply_wave(ctx, "canary", summary.waves["canary"])
    assert first.applied
    planned = {i["id"] for i in json.loads((ctx.directory / "plan.json").read_text())["items"]
               if i["status"] == "patched"}
    patched = {cid: patched_bytes(ctx.directory, cid) for cid in planned}

    again = start_run(campaign, "restart", store=ctx.store, home=home)
    outcome = run_campaign(again, approve="all", consumer_filter="legacy-scripts/*", soak=False)

    assert outcome["status"] == "finished"
    assert applied_counts(ctx.store) == Counter({cid: 1 for cid in planned})
    for cid, new in patched.items():
        assert file_path(fleet, cid).read_bytes() == new
        assert merges_touching(fleet, cid) == 1


def test_a_stale_apply_started_of_an_older_run_does_not_hide_a_new_patch(fleet_template, tmp_path, home):
    """Run 1 died after ``apply_started`` and before writing; a human then edited the file;
    run 2 plans the edited file. Its patch must be written, not taken for the interrupted
    write of run 1 (the file differs from run 1's "before" because of the human)."""
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    ctx = start_run(campaign, "died", store=CampaignStore(store_url(home)), home=home)
    ids = discover(ctx, "legacy-scripts/*")
    victim = next(cid for cid, status in rewrite_consumers(ctx, ids).items() if status == "patched")
    old = file_path(fleet, victim).read_bytes()
    ctx.record("apply_started", consumer=victim, wave="everyone", before=sha256(old),
               after=sha256(ctx.results()[victim].text.encode()))
    # the worker died here; a human edits the file (it still reads the source)
    repo, _, path = victim.partition("/")
    human = b"-- reviewed by a human\n" + old
    file_path(fleet, victim).write_bytes(human)
    git(fleet / "repos" / repo, "commit", "-q", "-am", "a human edit")
    # run 1 still holds the campaign (it never finished): free it, as `skein unlock` does
    assert ctx.store.break_lease(f"run:{CAMPAIGN_ID}").holder == f"{CAMPAIGN_ID}/died"

    later = start_run(campaign, "later", store=ctx.store, home=home)
    assert run_campaign(later, approve="all", consumer_filter=victim, soak=False)["status"] == "finished"

    new = patched_bytes(later.directory, victim)
    assert new.startswith(b"-- reviewed by a human\n") and b"analytics_v2.plays" in new
    assert file_path(fleet, victim).read_bytes() == new
    applied = ctx.store.events(CAMPAIGN_ID, "later", consumer=victim, actions=("applied",))
    assert len(applied) == 1 and applied[0].after_hash == sha256(new)
    assert merges_touching(fleet, victim) == 1


def test_a_crashed_wave_is_rolled_back_but_a_later_human_edit_is_kept(fleet_template, tmp_path, home):
    """A wave that started and never got a verdict (its monitor crashed) counts as failed;
    its rollback restores what the run wrote, and leaves alone a file a person changed since."""
    from skein.pipeline import unfinished_waves

    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    before = snapshot(fleet)
    ctx, summary = planned_steps(campaign, home, "crashed")
    record_decision(ctx, "Approve all", "alice")
    ctx.record("wave_started", wave="canary")
    done = apply_wave(ctx, "canary", summary.waves["canary"])
    files = [c for c in done.applied if not is_view(c)]
    assert len(files) >= 2
    assert unfinished_waves(ctx) == ["canary"]  # no wave_passed / wave_failed: a crash

    edited = file_path(fleet, files[0])
    edited.write_bytes(edited.read_bytes() + b"-- a person's later change\n")
    repo = repos(fleet)[files[0].split("/")[0]]
    git(repo, "commit", "-qam", "a later change by a person")
    kept = edited.read_bytes()

    rolled = rollback(ctx, "wave canary did not finish")

    assert set(rolled.restored) == set(done.applied) - {files[0]}
    assert "changed since this run applied it" in rolled.problems[files[0]]
    assert edited.read_bytes() == kept
    for cid in files[1:]:
        assert file_path(fleet, cid).read_bytes() == before["files"][cid]
    assert finalize(ctx)["status"] == "rolled_back"


def test_rollback_restores_exact_bytes_around_other_work_in_the_repository(fleet_template, tmp_path, home):
    """After the wave the owner commits an unrelated change to another file of the same
    repository and leaves uncommitted work in a third: the rollback restores each applied
    consumer byte for byte (sha256), keeps their commit and leaves their uncommitted work as it
    is; a consumer with uncommitted changes of its own is refused with the reason, untouched."""
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    before = snapshot(fleet)
    ctx, summary = planned_steps(campaign, home, "around", "legacy-scripts/*")
    record_decision(ctx, "Approve all", "alice")
    applied = []
    for wave, ids in summary.waves.items():
        ctx.record("wave_started", wave=wave)
        applied += apply_wave(ctx, wave, ids).applied
    files = [c for c in applied if not is_view(c)]
    assert len(files) >= 3
    repo = repos(fleet)["legacy-scripts"]
    tracked = git(repo, "ls-files").split()
    other = next(p for p in tracked if f"legacy-scripts/{p}" not in applied and p.endswith(".sql"))
    (repo / other).write_bytes((repo / other).read_bytes() + b"-- the owner's unrelated change\n")
    git(repo, "commit", "-qam", "unrelated change by the owner")
    owner_commit = git(repo, "rev-parse", "HEAD").strip()
    notes = repo / "NOTES.md"
    notes.write_text("uncommitted work in progress\n")
    dirty = file_path(fleet, files[0])
    dirty.write_bytes(dirty.read_bytes() + b"-- being edited, not committed\n")
    dirty_bytes = dirty.read_bytes()

    rolled = rollback(ctx, "test")

    assert "uncommitted changes" in rolled.problems[files[0]]
    assert dirty.read_bytes() == dirty_bytes  # refused, not overwritten
    for cid in files[1:]:
        assert sha256(file_path(fleet, cid).read_bytes()) == sha256(before["files"][cid]), cid
        assert cid in rolled.restored
    assert git(repo, "merge-base", "--is-ancestor", owner_commit, "HEAD") == ""  # their commit stays
    assert (repo / other).read_bytes().endswith(b"-- the owner's unrelated change\n")
    assert notes.read_text() == "uncommitted work in progress\n"


def test_a_rerun_on_a_migrated_fleet_says_it_is_done(first_run, capsys, monkeypatch):
    """The human summary (no --json) of a run that finds nothing left to migrate says so, and
    where the evidence and the audit are."""
    monkeypatch.setenv("SKEIN_HOME", str(first_run["home"]))
    monkeypatch.delenv("SKEIN_STORE_URL", raising=False)
    capsys.readouterr()
    code = skein_main(["run", str(first_run["campaign"]), "--run-id", "again", "--no-soak", "--approve", "all"])
    out = capsys.readouterr().out
    assert code in (0, 3), out
    applied = first_run["outcome"]["applied"]
    assert "Run again of plays-v2: finished." in out
    assert f"{applied} consumer(s) were already migrated by earlier runs" in out
    assert "skein audit plays-v2 --run again" in out and "summary.html" in out
    assert heads(first_run["fleet"]) == first_run["heads"]  # nothing written


def test_the_numbers_a_user_meets_agree_or_are_explained(first_run):
    """Discovery's "N rewrite", the plan's "M patched", the waves' sizes and the approval's
    counts differ on the demo; each page that shows them says why, with the consumers named."""
    from skein.evidence import approval_markdown
    from skein.plan import Plan
    from skein.rundir import RunDirectory
    from skein.spec import load_campaign

    files = RunDirectory(first_run["run_dir"])
    plan, waves = Plan.model_validate(first_run["plan"]), first_run["waves"]
    rewrite = [i.id for i in plan.items if i.discovery_status == "rewrite"]
    not_patched = [i for i in plan.items if i.id in rewrite and i.status != "patched"]
    assert not_patched and len(rewrite) - len(not_patched) == plan.counts["patched"]
    in_waves = sum(len(ids) for ids in waves.values())
    unchanged_in_waves = sum(1 for i in plan.with_status("unchanged") if any(i.id in w for w in waves.values()))
    left = plan.counts["unchanged"] - unchanged_in_waves
    assert left > 0 and in_waves == plan.counts["patched"] + unchanged_in_waves

    approval = approval_markdown(load_campaign(first_run["campaign"]), "first", plan,
                                 files.summary(), waves, "http://portal/x")
    for page in (approval, first_run["summary_md"]):
        assert (f"{unchanged_in_waves} verified (unchanged, checked against the migrated upstream), "
                f"{left} blocked (unchanged, an upstream is not migrated)") in page
        assert f"Discovery sent {len(rewrite)} consumers to the rewriter; {len(not_patched)} did not end patched" in page
        assert all(f"`{i.id}` {i.status}" in page for i in not_patched)
        assert f"The waves hold {in_waves} consumers: the {plan.counts['patched']} patched" in page
