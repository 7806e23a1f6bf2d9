"""Concurrency: leases in the campaign store (SQLite and PostgreSQL), two runs of one campaign
at once, two campaigns writing one consumer, DuckDB readers while a view is replaced.

Real processes, real git repositories, a real DuckDB file, the real PostgreSQL server.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from skein.store import CampaignStore, Lease
from test_store import postgres_url, store_url  # noqa: F401 - fixtures

SKEIN = Path(sys.executable).with_name("skein")
CAMPAIGN_ID = "plays-v2"


# --- leases ---------------------------------------------------------------------------------

def test_a_lease_keeps_other_holders_out_until_released(store_url):
    store = CampaignStore(store_url)
    assert store.acquire("run:demo", "demo/a") is None
    assert store.acquire("run:demo", "demo/a") is None  # the same run again: a retried task
    held = store.acquire("run:demo", "demo/b")
    assert isinstance(held, Lease) and held.holder == "demo/a"
    store.release("run:demo", "demo/b")  # not its lease: nothing happens
    assert store.acquire("run:demo", "demo/b").holder == "demo/a"
    store.release("run:demo", "demo/a")
    assert store.acquire("run:demo", "demo/b") is None
    assert store.lease("run:demo").holder == "demo/b"


def test_one_process_per_holder_and_dead_processes_are_taken_over(store_url):
    store = CampaignStore(store_url)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert store.acquire("run:demo", "demo/r", pid=sleeper.pid) is None
        # the same run id from another live process (two `skein run --run-id r`): refused
        assert store.acquire("run:demo", "demo/r", pid=os.getpid()).pid == sleeper.pid
        assert store.acquire("run:demo", "demo/other", pid=os.getpid()) is not None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert store.acquire("run:demo", "demo/other", pid=os.getpid()) is None  # its process died
    assert store.lease("run:demo").pid == os.getpid()


def test_an_expired_lease_is_taken_over(store_url):
    store = CampaignStore(store_url)
    assert store.acquire("consumer:x", "c1/r", ttl_s=0.2) is None
    assert store.acquire("consumer:x", "c2/r", ttl_s=60) is not None
    time.sleep(0.3)
    assert store.acquire("consumer:x", "c2/r", ttl_s=60) is None
    lease = store.lease("consumer:x")
    assert lease.holder == "c2/r" and lease.expires_at > datetime.now(UTC) + timedelta(seconds=50)


def _race(url: str, name: str, holder: str, start, out) -> None:
    store = CampaignStore(url)
    start.wait()
    out.put((holder, store.acquire(name, holder, pid=os.getpid()) is None))


def test_racing_processes_get_one_lease(store_url):
    """Eight processes asking at the same instant: exactly one holds the lease."""
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    CampaignStore(store_url).dispose()  # the schema exists before the race
    workers = [context.Process(target=_race, args=(store_url, "run:race", f"race/{n}", start, out))
               for n in range(8)]
    for worker in workers:
        worker.start()
    start.set()
    results = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert sum(won for _, won in results) == 1, results


# --- runs and consumers on the demo fleet ------------------------------------------------------

@pytest.fixture(scope="module")
def fleet_template(tmp_path_factory) -> Path:
    from skein.demo.fleet import build_demo_fleet

    out = tmp_path_factory.mktemp("template") / "fleet"
    build_demo_fleet(out, consumers=40, seed=7)
    return out


def copy_fleet(template: Path, root: Path) -> Path:
    shutil.copytree(template, root / "fleet", symlinks=True)
    return root / "fleet" / "campaigns" / "plays-v2.yaml"


def skein_run(campaign: Path, home: Path, run_id: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "SKEIN_HOME": str(home)}
    env.pop("SKEIN_STORE_URL", None)
    return subprocess.Popen([str(SKEIN), "run", str(campaign), "--run-id", run_id, "--no-soak",
                             "--approve", "all", "--json", "--consumers", "legacy-scripts/*", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("same_run_id", [False, True], ids=["two-run-ids", "one-run-id"])
def test_two_runs_of_one_campaign_never_run_at_once(fleet_template, tmp_path, same_run_id):
    campaign = copy_fleet(fleet_template, tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    runs = [skein_run(campaign, home, "same" if same_run_id else f"run-{n}") for n in range(2)]
    done = [(p.wait(timeout=900), *p.communicate()) for p in runs]
    codes = sorted(code for code, _, _ in done)
    refused = [err for code, _, err in done if code == 2]
    assert len(refused) == 1 and codes[1] in (0, 3), done
    assert f"campaign {CAMPAIGN_ID} is being run by" in refused[0]
    finished = next(json.loads(out) for code, out, _ in done if code != 2)
    assert finished["status"] == "finished" and finished["applied"] > 0

    store = CampaignStore(f"sqlite:///{home / 'store.db'}")
    events = store.events(CAMPAIGN_ID)
    assert {e.run_id for e in events} == {finished["run_id"]}  # the refused run left no trace
    applied = Counter(e.consumer for e in events if e.action == "applied")
    assert set(applied.values()) == {1} and len(applied) == finished["applied"]
    assert not [e for e in events if e.action in ("apply_failed", "rollback_started")]
    assert store.lease(f"run:{CAMPAIGN_ID}") is None  # given back at the end


@pytest.mark.slow
def test_a_consumer_another_campaign_is_writing_is_not_touched(fleet_template, tmp_path):
    """The lease of a consumer held by another campaign's write: this run's apply of it
    fails, with who holds it, and nothing of it is written; the others are applied."""
    from skein.pipeline import (apply_wave, discover, record_decision, rewrite_consumers,
                                simulate_consumers, start_run, summarize, target_for)
    from skein.pipeline.apply import lease_name

    campaign = copy_fleet(fleet_template, tmp_path)
    store = CampaignStore(f"sqlite:///{tmp_path / 'store.db'}")
    ctx = start_run(campaign, "r", store=store, home=tmp_path / "home", actor="task:test")
    ids = discover(ctx, "legacy-scripts/*")
    rewrite_consumers(ctx, ids)
    simulate_consumers(ctx, ids)
    summary = summarize(ctx)
    record_decision(ctx, "Approve all", "alice")
    wave = next(w for w, members in summary.waves.items() if len(members) >= 2)
    victim, *others = [c for c in summary.waves[wave] if c in ctx.results()]
    target = target_for(ctx, ctx.catalog().by_id()[victim])
    before = (target.repo / target.path).read_bytes()
    assert store.acquire(lease_name(target), "other-campaign/run-9", ttl_s=600) is None

    done = apply_wave(ctx, wave, [victim, *others])
    assert victim in done.failed and "other-campaign/run-9" in done.failed[victim]
    assert set(done.applied) == set(others)
    assert (target.repo / target.path).read_bytes() == before
    assert not store.events(CAMPAIGN_ID, "r", consumer=victim, actions=("apply_started",))
    assert all(store.lease(lease_name(target_for(ctx, ctx.catalog().by_id()[c]))) is None for c in others)


def _hold_write(path: str, seconds: float, ready) -> None:
    con = duckdb.connect(path)
    con.execute("CREATE OR REPLACE VIEW main.v AS SELECT 1 AS x")
    ready.set()
    time.sleep(seconds)
    con.close()


def test_a_duckdb_reader_waits_for_a_view_being_replaced(tmp_path):
    from skein.warehouse import open_warehouse

    file = tmp_path / "w.duckdb"
    with duckdb.connect(str(file)) as con:
        con.execute("CREATE TABLE main.t AS SELECT 1 AS a")
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    writer = context.Process(target=_hold_write, args=(str(file), 2.0, ready))
    writer.start()
    try:
        assert ready.wait(60)
        with pytest.raises(duckdb.IOException, match="(?i)lock"):  # what readers met before
            duckdb.connect(str(file), read_only=True)
        started = time.monotonic()
        schemas = open_warehouse(f"duckdb:///{file}").schemas()
        assert "main.t" in schemas and time.monotonic() - started >= 0.5
    finally:
        writer.join(timeout=60)
