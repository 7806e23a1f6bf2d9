"""Issue 18, items 4, 7 (view comments) and 9 (unlock): an interrupted rollback is finished by
the next attempt of the campaign, whatever its run id, and its report is true; a replaced or
restored view keeps its comment (owner, tier); ``skein unlock`` never frees a live run.

Real processes killed with SIGKILL (or a crash point: ``skein.faults``), real git repositories,
a real DuckDB warehouse and the real campaign store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from skein.store import CampaignStore, sha256
from test_campaign_run import (  # noqa: F401 - fixtures
    CAMPAIGN_ID,
    apply_wave,
    copy_fleet,
    file_path,
    fleet_of,
    fleet_template,
    home,
    is_view,
    monitor_wave,
    planned_steps,
    record_decision,
    snapshot,
    store_url,
)

SKEIN = Path(sys.executable).with_name("skein")


def skein_run(campaign: Path, home: Path, run_id: str, *, env: dict | None = None,
              consumers: str = "legacy-scripts/*") -> subprocess.Popen:
    """``skein run`` in its own process (the test may kill it), ``--json`` outcome on stdout."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SKEIN_CRASH", "SKEIN_PAUSE"))}
    full.pop("SKEIN_STORE_URL", None)
    full.update({"SKEIN_HOME": str(home), **(env or {})})
    return subprocess.Popen([str(SKEIN), "run", str(campaign), "--run-id", run_id, "--no-soak",
                             "--approve", "all", "--json", "--consumers", consumers],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full)


def finished(process: subprocess.Popen) -> tuple[int, dict, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, json.loads(out) if out.strip().startswith("{") else {}, err


def drop_target(campaign: Path) -> None:
    """The target goes away (the dry run still proves the patches from the campaign's forward
    query): every canary fails its monitoring and the run rolls back. The canary is widened
    to most consumers, so the rollback has several to restore."""
    fleet = fleet_of(campaign)
    campaign.write_text(campaign.read_text().replace("share: 0.1", "share: 0.7"))
    with duckdb.connect(str(fleet / "warehouse.duckdb")) as con:
        con.execute("DROP TABLE analytics_v2.plays CASCADE")


def kill_inside_rollback(campaign: Path, home: Path, run_id: str, tmp_path: Path) -> None:
    """Run until the rollback has restored its first consumer, then SIGKILL the process."""
    marker = tmp_path / f"paused-{run_id}"
    run = skein_run(campaign, home, run_id, env={"SKEIN_PAUSE_AT": "rollback:after_restore:1",
                                                   "SKEIN_PAUSE_MARKER": str(marker)})
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait(timeout=60) == -signal.SIGKILL


# --- item 4: an interrupted rollback is finished, with any run id --------------------------

@pytest.mark.parametrize("rerun", [  # two `skein run` processes, one killed: ~20 s each
    pytest.param("second", id="another-run-id"),
    pytest.param("first", id="same-run-id", marks=pytest.mark.slow)])
def test_a_rollback_killed_after_its_first_restore_is_finished_by_the_next_run(
        fleet_template, tmp_path, rerun):
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet, home = fleet_of(campaign), tmp_path / "home"
    home.mkdir()
    drop_target(campaign)
    before = snapshot(fleet)

    kill_inside_rollback(campaign, home, "first", tmp_path)

    store = CampaignStore(f"sqlite:///{home / 'store.db'}")
    events = store.events(CAMPAIGN_ID, "first")
    applied = {e.consumer for e in events if e.action == "applied"}
    restored = [e.consumer for e in events if e.action == "rolled_back"]
    assert len(applied) >= 2 and len(restored) == 1, (applied, restored)
    still = [c for c in applied if file_path(fleet, c).read_bytes() != before["files"][c]]
    assert still and restored[0] not in still  # killed half way through the rollback

    code, outcome, err = finished(skein_run(campaign, home, rerun))

    assert code == 5, err[-2000:]
    assert snapshot(fleet)["files"] == before["files"]  # every file at its pre-campaign bytes
    assert snapshot(fleet)["repos"] == before["repos"]
    first = store.events(CAMPAIGN_ID, "first")
    resumed_at = next(i for i, e in enumerate(first) if e.detail.get("by_run") == rerun)
    assert {e.consumer for e in first if e.action == "rolled_back"} == applied
    closed = [e for e in first[resumed_at:] if e.action in ("campaign_rolled_back", "rollback_incomplete")]
    assert [e.action for e in closed] == ["campaign_rolled_back"]
    assert closed[0].detail == {"restored": len(applied), "problems": 0}
    finish = [e for e in first if e.action == "finished"][-1]
    assert finish.detail["status"] == "rolled_back"
    # the report names the rollback it finished, truthfully
    assert outcome["finished_rollbacks"] == [{"run": "first", "restored": len(applied),
                                             "not_restored": {}}]
    assert outcome["status"] == "rolled_back" and outcome["not_restored"] == 0
    resumed = store.events(CAMPAIGN_ID, rerun, actions=("rollback_resumed",))
    assert len(resumed) == 1 and sorted(resumed[0].detail["restored"]) == sorted(applied)
    from skein.pipeline.rollback_scope import pending_rollbacks

    assert pending_rollbacks(store, CAMPAIGN_ID) == []


def test_a_crash_after_a_merge_then_a_rerun_that_rolls_back_restores_the_merged_file(
        fleet_template, tmp_path):
    """The first run dies right after merging its second consumer (no ``applied`` row); the
    rerun (another run id) rolls back: it undoes what the dead attempt left too, and says so."""
    campaign = copy_fleet(fleet_template, tmp_path)
    fleet, home = fleet_of(campaign), tmp_path / "home"
    home.mkdir()
    drop_target(campaign)
    before = snapshot(fleet)

    code, _, err = finished(skein_run(campaign, home, "crashed", env={"SKEIN_CRASH_AT": "git:after_merge:2"}))
    assert code == 137, err[-2000:]
    store = CampaignStore(f"sqlite:///{home / 'store.db'}")
    started = [e.consumer for e in store.events(CAMPAIGN_ID, "crashed", actions=("apply_started",))]
    assert len(started) == 2
    merged = started[1]
    assert file_path(fleet, merged).read_bytes() != before["files"][merged]

    code, outcome, err = finished(skein_run(campaign, home, "rerun"))

    assert code == 5, err[-2000:]
    assert snapshot(fleet)["files"] == before["files"]
    assert snapshot(fleet)["repos"] == before["repos"]
    rerun = store.events(CAMPAIGN_ID, "rerun", actions=("rolled_back",))
    inherited = {e.consumer: e.detail.get("written_by") for e in rerun}
    assert inherited[merged] == "crashed" and inherited[started[0]] == "crashed"
    assert outcome["status"] == "rolled_back" and outcome["not_restored"] == 0
    assert outcome["rolled_back"] == len(inherited)
    from skein.console import run_summary

    text = run_summary(outcome, CAMPAIGN_ID, "rerun", "/d")
    assert "every change of this run was undone" in text and "INCOMPLETE" not in text


def test_a_run_killed_between_its_failed_wave_and_its_rollback_is_rolled_back_by_the_next(
        fleet_template, tmp_path, home):
    """``wave_failed`` is the decision: a run that dies before ``rollback_started`` still owes
    its rollback, and a run with another id finishes it before its own discovery."""
    from skein.pipeline import discover, finalize, start_run

    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    before = snapshot(fleet)
    ctx, summary = planned_steps(campaign, home, "died", "legacy-scripts/*")
    record_decision(ctx, "Approve all", "alice")
    ctx.record("wave_started", wave="canary")
    done = apply_wave(ctx, "canary", summary.waves["canary"])
    assert done.applied
    with duckdb.connect(str(fleet / "warehouse.duckdb")) as con:
        con.execute("DROP TABLE analytics_v2.plays CASCADE")
    assert not monitor_wave(ctx, "canary").passed  # wave_failed recorded; then the process died
    outcome = finalize(ctx)  # as Airflow's finalize task would, after a dead rollback task

    later = start_run(campaign, "later", store=ctx.store, home=home)
    discover(later, "legacy-scripts/*")

    assert snapshot(fleet)["files"] == before["files"]
    assert outcome["status"] == "failed" and outcome["rollback_pending"]
    died = ctx.store.events(CAMPAIGN_ID, "died")
    assert {e.consumer for e in died if e.action == "rolled_back"} == set(done.applied)
    assert "wave canary: error rate 100% > 10%" in next(
        e.detail["message"] for e in died if e.action == "rollback_started")
    assert died[-1].action == "finished" and died[-1].detail["status"] == "rolled_back"
    # ... and a third run has nothing left to finish
    later.release_run()
    third = start_run(campaign, "third", store=ctx.store, home=home)
    discover(third, "legacy-scripts/*")
    assert not ctx.store.events(CAMPAIGN_ID, "third", actions=("rollback_resumed",))


def test_a_rollback_that_cannot_restore_everything_does_not_say_it_did(fleet_template, tmp_path, home):
    from skein.console import run_summary
    from skein.pipeline import finalize, rollback

    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    ctx, summary = planned_steps(campaign, home, "edited", "legacy-scripts/*")
    record_decision(ctx, "Approve all", "alice")
    ctx.record("wave_started", wave="canary")
    files = [c for c in apply_wave(ctx, "canary", summary.waves["canary"]).applied if not is_view(c)]
    edited = file_path(fleet, files[0])
    edited.write_bytes(edited.read_bytes() + b"-- a person's later change\n")
    subprocess.run(["git", "-C", str(edited.parent), "commit", "-qam", "later"], check=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "p", "GIT_AUTHOR_EMAIL": "p@x",
                        "GIT_COMMITTER_NAME": "p", "GIT_COMMITTER_EMAIL": "p@x"})

    rolled = rollback(ctx, "test")
    outcome = finalize(ctx)

    assert list(rolled.problems) == [files[0]]
    assert outcome["status"] == "rolled_back" and outcome["not_restored"] == 1
    text = run_summary(outcome, CAMPAIGN_ID, "edited", "/d")
    assert "INCOMPLETE" in text and "every change" not in text


@pytest.mark.slow  # 1.5-3 minutes: 5-8 `skein run` processes
def test_a_small_soak_of_kills_inside_rollbacks_settles_with_nothing_lost(tmp_path, monkeypatch):
    """``bench/soak.py --only rollback_kills`` in small: two trials of runs killed inside their
    rollbacks (a crash point, or SIGKILL once a rollback started), rerun until settled."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    from soak_rollback import rollback_kills

    result = rollback_kills(tmp_path, 40, 2, seed=3, glob="legacy-scripts/*",
                            ways=("crash_point", "rollback"))

    assert result["kills"] >= 2 and result["kills_inside_rollback"] >= 1, result
    for key in ("lost", "applied_twice", "half_applied", "unfinished_rollbacks", "not_undone",
                "dirty_repositories"):
        assert result[key] == 0, (key, result)
    assert result["restored"] == 2 * result["consumers"] > 0  # every trial ends rolled back


# --- item 7: a replaced or restored view keeps its comment -----------------------------------

def test_a_replaced_and_restored_duckdb_view_keeps_its_comment(tmp_path):
    from skein.apply import Target, ViewApplier

    file = tmp_path / "wh.duckdb"
    comment = "owner=team-radio tier=1 -- it's \"quoted\"; DROP TABLE a.t; \\"
    with duckdb.connect(str(file)) as con:
        con.execute('CREATE SCHEMA "Sales"; CREATE TABLE "Sales".t (x INT); INSERT INTO "Sales".t VALUES (1)')
        con.execute('CREATE VIEW "Sales"."Odd ""view""" AS SELECT x FROM "Sales".t')
        con.execute("COMMENT ON VIEW \"Sales\".\"Odd \"\"view\"\"\" IS '" + comment.replace("'", "''") + "'")
    target = Target(consumer='warehouse/Sales.Odd "view"', kind="view", campaign="c",
                    view='Sales.Odd "view"', warehouse=f"duckdb:///{file}")
    applier = ViewApplier()
    original = applier.current(target)

    applier.write(target, b'CREATE VIEW "Sales"."Odd ""view""" AS SELECT x + 1 AS x FROM "Sales".t',
                  "apply", expected=sha256(original))
    assert view_comment(file) == comment
    assert applier.write(target, original, "roll back") == original
    assert view_comment(file) == comment
    with duckdb.connect(str(file), read_only=True) as con:  # nothing else ran
        assert con.execute('SELECT * FROM "Sales".t').fetchall() == [(1,)]


def view_comment(file: Path) -> str | None:
    with duckdb.connect(str(file), read_only=True) as con:
        return con.execute("SELECT comment FROM duckdb_views() WHERE NOT internal").fetchone()[0]


def test_ownership_read_from_a_view_comment_survives_apply_and_rollback(fleet_template, tmp_path, home):
    """The demo fleet's views carry ``owner=... tier=...``: after a campaign applied them and
    rolled them back, discovery still finds the same owners and tiers."""
    from skein.pipeline import rollback

    campaign = copy_fleet(fleet_template, tmp_path)
    fleet = fleet_of(campaign)
    comments = view_comments(fleet)
    assert any(comments.values())
    ctx, summary = planned_steps(campaign, home, "views", "warehouse/*")
    record_decision(ctx, "Approve all", "alice")
    applied = []
    for wave, ids in summary.waves.items():
        applied += apply_wave(ctx, wave, ids).applied
    assert applied and all(is_view(c) for c in applied)
    assert view_comments(fleet) == comments
    assert rollback(ctx, "test").verified
    assert view_comments(fleet) == comments


def view_comments(fleet: Path) -> dict[str, str | None]:
    with duckdb.connect(str(fleet / "warehouse.duckdb"), read_only=True) as con:
        return {f"{s}.{v}": c for s, v, c in con.execute(
            "SELECT schema_name, view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall()}


# --- item 9: `skein unlock` never frees a live run -------------------------------------------

def unlock(url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SKEIN), "unlock", CAMPAIGN_ID, "--store", url, *extra],
                          capture_output=True, text=True, timeout=120)


HOLD = """
import sys, time
from skein.store import CampaignStore
import os
CampaignStore(sys.argv[1]).acquire("run:plays-v2", "plays-v2/live", pid=os.getpid())
print("held", flush=True)
time.sleep(120)
"""


def test_unlock_refuses_while_the_holding_process_lives_and_frees_it_once_dead(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in ((), ("--force",)):
            refused = unlock(url, *extra)
            assert refused.returncode == 2, refused
            assert f"process {holder.pid} on this host is running" in refused.stderr
            assert "Traceback" not in refused.stderr
            assert CampaignStore(url).lease(f"run:{CAMPAIGN_ID}").pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    freed = unlock(url)
    assert freed.returncode == 0, freed
    assert "freed" in freed.stdout and CampaignStore(url).lease(f"run:{CAMPAIGN_ID}") is None
    assert [e.action for e in CampaignStore(url).events(CAMPAIGN_ID, "live")] == ["unlocked"]


def put_lease(url: str, *, host: str | None, pid: int | None, age: timedelta) -> None:
    from skein.store import leases

    store = CampaignStore(url)
    with store.engine.begin() as conn:
        conn.execute(leases.delete())
        conn.execute(leases.insert().values(name=f"run:{CAMPAIGN_ID}", holder=f"{CAMPAIGN_ID}/far",
                                            host=host, pid=pid, acquired_at=datetime.now(UTC) - age))


@pytest.mark.parametrize("host,pid", [("another-host.invalid", 4242), (None, None)],
                         ids=["process-on-another-host", "dag-run"])
def test_unlock_needs_force_for_a_holder_it_cannot_check_and_refuses_a_fresh_one(tmp_path, host, pid):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    put_lease(url, host=host, pid=pid, age=timedelta(seconds=30))
    fresh = unlock(url, "--force")
    assert fresh.returncode == 2 and "renewed" in fresh.stderr, fresh
    assert CampaignStore(url).lease(f"run:{CAMPAIGN_ID}") is not None

    put_lease(url, host=host, pid=pid, age=timedelta(hours=2))
    refused = unlock(url)
    assert refused.returncode == 2 and "--force" in refused.stderr, refused
    assert CampaignStore(url).lease(f"run:{CAMPAIGN_ID}") is not None
    forced = unlock(url, "--force")
    assert forced.returncode == 0, forced
    assert CampaignStore(url).lease(f"run:{CAMPAIGN_ID}") is None
    unlocked = CampaignStore(url).events(CAMPAIGN_ID, "far")
    assert [e.action for e in unlocked] == ["unlocked"] and unlocked[0].detail["forced"] is True
