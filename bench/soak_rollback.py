"""Soak, part 4: random SIGKILLs inside rollbacks (``bench/soak.py --only rollback_kills``).

Each trial copies a demo fleet whose target was dropped after planning could still prove the
patches (the dry run reads the campaign's forward query), with its canary widened to most
consumers: every run applies the canary, fails its monitoring and rolls back. The trial kills
runs with SIGKILL (``os.kill``, no cleanup) 1 to 3 times, each at a random moment chosen by one
of three ways:

- ``rollback``: as soon as the store shows a rollback started (the run's own, or an earlier
  run's being finished by this one), after a random delay up to the rollback's length;
- ``crash_point``: ``SKEIN_CRASH_AT=rollback:after_write:N`` / ``rollback:after_restore:N``;
- ``anytime``: after a random delay over the whole run (planning, applying, monitoring...);

then reruns the campaign (the same run id or a new one, at random) until a run ends by itself.
After that it checks every consumer the plan patched, and the repositories:

- **half-applied**: content that is neither the original nor the planned patch;
- **lost**: content and audit disagree (migrated with no ``applied`` since its last
  ``rolled_back``, or recorded applied and not there);
- **applied twice**: two ``applied`` events with no ``rolled_back`` between, or a file whose
  number of merges does not match its state (each apply and each restore is one merge);
- **not undone**: a consumer still migrated at the end (every run of this campaign rolls back);
- **unfinished rollbacks**: a run whose rollback was decided and never closed
  (``skein.pipeline.rollback_scope.pending_rollbacks``), or closed as incomplete;
- a repository left mid-merge, off its default branch, or with tracked changes.
"""

from __future__ import annotations

import fnmatch
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import duckdb
from soak import CAMPAIGN_ID, SKEIN, content, merges, planned_of, skein_env

WAYS = ("rollback", "rollback", "crash_point", "anytime")  # most kills aimed inside rollbacks


def rollback_kills(tmp: Path, consumers: int, trials: int, seed: int, glob: str | None = None,
                   ways: tuple[str, ...] = WAYS) -> dict:
    """``trials`` trials on one ``consumers``-consumer fleet (``glob``: only the consumers it
    matches); the counts over all of them."""
    rng = random.Random(seed)
    template, planned = _template(tmp / "rk-template", consumers, glob)
    timing = _calibrate(template, tmp / "rk-calibration", glob)
    results = [_trial(template, tmp / f"rk-{n}", planned, rng, glob, timing, ways) for n in range(trials)]
    keys = ("runs", "kills", "kills_inside_rollback", "lost", "applied_twice", "half_applied",
            "unfinished_rollbacks", "dirty_repositories", "restored", "migrated")
    total = {k: sum(r[k] for r in results) for k in keys}
    # Every run of this campaign rolls back: a consumer still migrated at the end is a change
    # some rollback did not undo (what a rollback that was never finished leaves).
    total["not_undone"] = total["migrated"]
    return {"fault": "SIGKILL at random moments, mostly inside rollbacks; rerun until settled",
            "trials": trials, "consumers": len(planned), **total,
            "applied": total["migrated"], "rolled_back": total["restored"],
            "ways": sorted({w for r in results for w in r["ways"]}), "calibration": timing,
            "per_trial": results}


def _calibrate(template: Path, root: Path, glob: str | None) -> dict:
    """One run left alone, for the kills' random moments: how long a run and its rollback
    take, and how many consumers the rollback restores."""
    from skein.store import CampaignStore

    root.mkdir(parents=True)
    shutil.copytree(template, root / "fleet", symlinks=True)
    (root / "home").mkdir()
    _attempt(root / "fleet" / "campaigns" / "plays-v2.yaml", root / "home", "calibration", None,
             random.Random(0), glob, {})
    store = CampaignStore(f"sqlite:///{root / 'home' / 'store.db'}")
    events = store.events(CAMPAIGN_ID)
    store.dispose()
    at = {e.action: e.at for e in events}
    first = events[0].at
    return {"run_s": round((at["finished"] - first).total_seconds(), 1),
            "rollback_s": round((at["campaign_rolled_back"] - at["rollback_started"]).total_seconds(), 2),
            "restores": sum(1 for e in events if e.action == "rolled_back")}


def _template(root: Path, consumers: int, glob: str | None) -> tuple[Path, dict]:
    """The demo fleet, its target dropped and its canary widened; and its plan (``skein plan``)."""
    fleet = root / "fleet"
    subprocess.run([str(SKEIN), "demo-fleet", "--out", str(fleet), "--consumers", str(consumers),
                    "--seed", "14"], check=True, capture_output=True, env=skein_env())
    spec = fleet / "campaigns" / "plays-v2.yaml"
    spec.write_text(spec.read_text().replace("share: 0.1", "share: 0.7"))
    with duckdb.connect(str(fleet / "warehouse.duckdb")) as con:
        con.execute("DROP TABLE analytics_v2.plays CASCADE")
    subprocess.run([str(SKEIN), "plan", str(spec), "--out", str(root / "plan")], capture_output=True,
                   env=skein_env())
    planned = planned_of(fleet, root / "plan")
    return fleet, {cid: v for cid, v in planned.items() if glob is None or fnmatch.fnmatch(cid, glob)}


def _trial(template: Path, root: Path, planned: dict, rng: random.Random, glob: str | None,
           timing: dict, ways: tuple[str, ...]) -> dict:
    root.mkdir(parents=True)
    shutil.copytree(template, root / "fleet", symlinks=True)
    fleet, home = root / "fleet", root / "home"
    home.mkdir()
    spec = fleet / "campaigns" / "plays-v2.yaml"
    run_id, runs, kills, inside, landed, aimed = "r0", 0, 0, 0, [], 0
    to_aim = rng.randint(2, 3)  # runs aimed at, before one is left to finish
    while runs < 9:  # one that never settles shows as unfinished below
        if runs and rng.random() < 0.5:
            run_id = f"r{runs}"  # half the reruns with a new run id
        way = rng.choice(ways) if aimed < to_aim else None
        aimed += way is not None
        code, was_killed = _attempt(spec, home, run_id, way, rng, glob, timing)
        runs += 1
        if was_killed:
            kills += 1
            landed.append(way)
            inside += bool(_pending(home))  # a rollback decided and left unfinished
        elif way is None:
            break  # a run left alone ended by itself: settled
    return {"runs": runs, "kills": kills, "kills_inside_rollback": inside, "ways": landed,
            "last_exit": code, **_settled(fleet, home, planned)}


def _attempt(spec: Path, home: Path, run_id: str, way: str | None, rng: random.Random,
             glob: str | None, timing: dict) -> tuple[int, bool]:
    """One ``skein run``, killed the ``way`` given (None: left to finish); (exit code, killed)."""
    env = skein_env(home)
    if way == "crash_point":
        point = rng.choice(["rollback:after_write", "rollback:after_restore"])
        env["SKEIN_CRASH_AT"] = f"{point}:{rng.randint(1, max(1, timing['restores']))}"
    started = _rollbacks_started(home)
    run = subprocess.Popen([str(SKEIN), "run", str(spec), "--run-id", run_id, "--no-soak", "--approve",
                            "all", "--json", *(["--consumers", glob] if glob else [])],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    if way == "anytime":
        _kill_after(run, rng.uniform(0.5, timing["run_s"]))
    elif way == "rollback":
        while run.poll() is None and _rollbacks_started(home) == started:
            time.sleep(0.05)
        _kill_after(run, rng.uniform(0.0, timing["rollback_s"]))
    code = run.wait(timeout=1200)
    return code, code in (-signal.SIGKILL, 137)


def _kill_after(run: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if run.poll() is None:
        os.kill(run.pid, signal.SIGKILL)


def _rollbacks_started(home: Path) -> int:
    """``rollback_started`` events so far, read with plain sqlite3 while a run writes."""
    try:
        with sqlite3.connect(f"file:{home / 'store.db'}?mode=ro", uri=True, timeout=10) as con:
            return con.execute("SELECT count(*) FROM skein_audit WHERE action = 'rollback_started'").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _pending(home: Path) -> list[str]:
    """Runs whose rollback was decided (a failed wave, a started rollback) and never closed,
    read from the audit table directly: the soak does not trust the engine's own answer."""
    query = ("SELECT run_id, max(CASE WHEN action IN ('wave_failed', 'rollback_started') THEN id END), "
             "max(CASE WHEN action IN ('campaign_rolled_back', 'rollback_incomplete') THEN id END) "
             "FROM skein_audit WHERE campaign = ? GROUP BY run_id")
    try:
        with sqlite3.connect(f"file:{home / 'store.db'}?mode=ro", uri=True, timeout=30) as con:
            rows = con.execute(query, [CAMPAIGN_ID]).fetchall()
    except sqlite3.Error:
        return []
    return [run for run, decided, closed in rows if decided is not None and decided > (closed or 0)]


def _settled(fleet: Path, home: Path, planned: dict) -> dict:
    """The checks of the module's docstring, after the last run."""
    from skein.store import CampaignStore

    store = CampaignStore(f"sqlite:///{home / 'store.db'}")
    events = store.events(CAMPAIGN_ID, actions=("applied", "rolled_back", "rollback_incomplete"))
    store.dispose()
    history: dict[str, list[str]] = {}
    for e in events:
        if e.consumer:
            history.setdefault(e.consumer, []).append(e.action)
    out = {"lost": [], "applied_twice": [], "half_applied": [], "restored": 0, "migrated": 0}
    for cid, (old, new) in planned.items():
        now, hist, view = content(fleet, cid), history.get(cid, []), cid.startswith("warehouse/")
        migrated, restored = (now != old) if view else (now == new), now == old
        state = "applied" if hist and hist[-1] == "applied" else "not applied"
        if not (migrated or restored):
            out["half_applied"].append(cid)
        elif (migrated and state != "applied") or (restored and state == "applied"):
            out["lost"].append(cid)
        if any(a == b == "applied" for a, b in zip(hist, hist[1:])) or (
                not view and merges(fleet, cid) % 2 != (1 if migrated else 0)):
            out["applied_twice"].append(cid)
        out["migrated" if migrated else "restored"] += 1
    unfinished = _pending(home) + [e.run_id for e in events if e.action == "rollback_incomplete"]
    dirty = [repo.name for repo in sorted((fleet / "repos").iterdir()) if _dirty(repo)]
    return {**{k: len(v) if isinstance(v, list) else v for k, v in out.items()},
            "unfinished_rollbacks": len(unfinished), "dirty_repositories": len(dirty),
            "examples": {k: v[:5] for k, v in out.items() if isinstance(v, list) and v} | (
                {"unfinished": unfinished[:5], "dirty": dirty[:5]} if unfinished or dirty else {})}


def _dirty(repo: Path) -> bool:
    if not (repo / ".git").is_dir():
        return False
    git = ["git", "-C", str(repo)]
    branch = subprocess.run([*git, "symbolic-ref", "--short", "HEAD"], capture_output=True, text=True).stdout
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                            text=True).stdout
    return (repo / ".git" / "MERGE_HEAD").exists() or branch.strip() != "main" or bool(status.strip())
