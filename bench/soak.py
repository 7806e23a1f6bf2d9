"""Soak: campaigns back to back on demo fleets, with faults injected; nothing may be lost,
applied twice or half-applied, and no rollback may stay unfinished.

1. ``killed``: ``skein run`` is killed (SIGKILL-like, ``SKEIN_CRASH_AT=apply:after_write:N``:
   written, not recorded) half way through its writes, then run again with the same run id.
2. ``broken``: the canary wave is applied (``--waves canary``), then the target table is dropped;
   the same run id continues with every wave: the next wave's monitoring fails and the run
   rolls back everything it applied.
3. ``clean``: a plain run.
4. ``rollback_kills`` (``bench/soak_rollback.py``): a campaign whose monitoring fails (its
   target dropped), so every run rolls back; runs are killed with SIGKILL at random moments,
   most of them inside a rollback (the first run's, or an earlier run's being finished by the
   next one), then rerun (the same or a new run id, at random) until a run ends by itself.

For every consumer the plan patched it checks the end state against the plan and the audit:
**lost** = content that is neither the original nor the planned patch, or a run that should
have applied it and did not say so; **applied twice** = more than one ``applied`` event or more
than one merge touching it. Prints JSON.

    python bench/soak.py [--consumers 2000] [--keep DIR] [--only rollback_kills]
                         [--rollback-consumers 40] [--rollback-trials 6] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import duckdb

from skein.rundir import file_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))  # this checkout's engine, as skein_env gives its runs

from skein.rundir import file_name  # noqa: E402
SKEIN = ROOT / ".venv" / "bin" / "skein"
CAMPAIGN_ID = "plays-v2"


def skein_env(home: Path | None = None) -> dict[str, str]:
    """The environment of a ``skein`` process: this checkout's engine first (a git worktree
    sharing the venv of another checkout must not test that one's), no injected faults."""
    env = {k: v for k, v in os.environ.items()
           if k != "SKEIN_STORE_URL" and not k.startswith(("SKEIN_CRASH", "SKEIN_PAUSE"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "include"), env.get("PYTHONPATH")) if p)
    if home is not None:
        env["SKEIN_HOME"] = str(home)
    return env


def skein(*args: str, home: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = skein_env(home)
    if crash_at:
        env["SKEIN_CRASH_AT"] = crash_at
    return subprocess.run([str(SKEIN), *args], capture_output=True, text=True, env=env)


def content(fleet: Path, consumer: str) -> bytes | None:
    if consumer.startswith("warehouse/"):
        schema, _, view = consumer.split("/", 1)[1].partition(".")
        with duckdb.connect(str(fleet / "warehouse.duckdb"), read_only=True) as con:
            row = con.execute("SELECT sql FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
                              [schema, view]).fetchone()
        return row[0].encode() if row else None
    repo, _, path = consumer.partition("/")
    done = subprocess.run(["git", "-C", str(fleet / "repos" / repo), "show", f"HEAD:{path}"],
                          capture_output=True)
    return done.stdout if done.returncode == 0 else None


def merges(fleet: Path, consumer: str) -> int:
    repo, _, path = consumer.partition("/")
    out = subprocess.run(["git", "-C", str(fleet / "repos" / repo), "log", "--merges", "--first-parent",
                          "--format=%H", "-m", "--", path], capture_output=True, text=True).stdout
    return len(out.split())


def check(fleet: Path, home: Path, run_id: str, planned: dict, expect: str) -> dict:
    """``expect``: applied (every planned consumer ends patched) or restored (ends original)."""
    from skein.store import CampaignStore

    store = CampaignStore(f"sqlite:///{home / 'store.db'}")
    events = store.events(CAMPAIGN_ID, run_id)
    store.dispose()
    applied = Counter(e.consumer for e in events if e.action == "applied")
    rolled = {e.consumer for e in events if e.action == "rolled_back"}
    lost, twice = [], []
    for cid, (old, new) in planned.items():
        now = content(fleet, cid)
        is_view = cid.startswith("warehouse/")
        if expect == "applied":
            ok = (now != old) if is_view else (now == new)
            if not ok or applied[cid] != 1:
                lost.append(cid)
        else:
            if now != old or (applied[cid] and cid not in rolled):
                lost.append(cid)
        if applied[cid] > 1 or (not is_view and merges(fleet, cid) > (1 if expect == "applied" else 2)):
            twice.append(cid)
    return {"consumers": len(planned), "applied": sum(1 for c in planned if applied[c]),
            "rolled_back": len(rolled), "lost": len(lost), "applied_twice": len(twice),
            "lost_ids": lost[:10], "twice_ids": twice[:10]}


def planned_of(fleet: Path, run_dir: Path) -> dict[str, tuple[bytes | None, bytes]]:
    plan = json.loads((run_dir / "plan.json").read_text())
    out = {}
    for item in plan["items"]:
        if item["status"] == "patched" and item["simulation"] == "pass":
            name = file_name(item["id"])
            agent = json.loads((run_dir / "agents" / f"{name}.json").read_text())
            out[item["id"]] = (agent["original"].encode(), (run_dir / "patched" / name).read_bytes())
    return out


def campaign(tmp: Path, name: str, consumers: int, seed: int) -> tuple[Path, Path, Path]:
    fleet, home = tmp / name, tmp / f"{name}-home"
    home.mkdir(parents=True)
    subprocess.run([str(SKEIN), "demo-fleet", "--out", str(fleet), "--consumers", str(consumers),
                    "--seed", str(seed)], check=True, capture_output=True, env=skein_env())
    return fleet, home, fleet / "campaigns" / "plays-v2.yaml"


def killed(tmp: Path, consumers: int) -> dict:
    fleet, home, spec = campaign(tmp, "killed", consumers, 11)
    run = ["run", str(spec), "--run-id", "soak", "--no-soak", "--approve", "all", "--json"]
    first = skein(*run, home=home, crash_at=f"apply:after_write:{max(2, consumers // 20)}")
    planned = planned_of(fleet, home / "runs" / CAMPAIGN_ID / "soak")
    again = skein(*run, home=home)
    return {"fault": "skein run killed after a write, before its audit row", "first_exit": first.returncode,
            "second_exit": again.returncode, **check(fleet, home, "soak", planned, "applied")}


def broken(tmp: Path, consumers: int) -> dict:
    fleet, home, spec = campaign(tmp, "broken", consumers, 12)
    run = ["run", str(spec), "--run-id", "soak", "--no-soak", "--approve", "all", "--json"]
    canary = skein(*run, "--waves", "canary", home=home)
    planned = planned_of(fleet, home / "runs" / CAMPAIGN_ID / "soak")
    with duckdb.connect(str(fleet / "warehouse.duckdb")) as con:
        con.execute("DROP TABLE analytics_v2.plays CASCADE")
    rest = skein(*run, home=home)
    status = json.loads(rest.stdout)["status"] if rest.stdout.strip().startswith("{") else rest.stderr[-300:]
    return {"fault": "target dropped after the canary", "canary_exit": canary.returncode,
            "second_exit": rest.returncode, "status": status,
            **check(fleet, home, "soak", planned, "restored")}


def clean(tmp: Path, consumers: int) -> dict:
    fleet, home, spec = campaign(tmp, "clean", consumers, 13)
    done = skein("run", str(spec), "--run-id", "soak", "--no-soak", "--approve", "all", home=home)
    planned = planned_of(fleet, home / "runs" / CAMPAIGN_ID / "soak")
    return {"fault": None, "exit": done.returncode, **check(fleet, home, "soak", planned, "applied")}


def main() -> None:
    from soak_rollback import rollback_kills

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, default=2000)
    parser.add_argument("--keep", help="keep the fleets in this directory")
    parser.add_argument("--only", nargs="+", choices=["killed", "broken", "clean", "rollback_kills"],
                        help="run only these campaigns")
    parser.add_argument("--rollback-consumers", type=int, default=40,
                        help="fleet size of the rollback_kills trials (each trial runs it 2-5 times)")
    parser.add_argument("--rollback-trials", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1, help="seed of the random kills")
    args = parser.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="skein-soak-"))
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = {"killed": lambda: killed(tmp, args.consumers), "broken": lambda: broken(tmp, args.consumers),
             "clean": lambda: clean(tmp, args.consumers),
             "rollback_kills": lambda: rollback_kills(tmp, args.rollback_consumers, args.rollback_trials,
                                                      args.seed)}
    try:
        results = {name: step() for name, step in steps.items() if not args.only or name in args.only}
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    keys = ("applied", "rolled_back", "lost", "applied_twice", "half_applied", "unfinished_rollbacks",
            "not_undone")
    total = {k: sum(r.get(k, 0) for r in results.values()) for k in keys}
    print(json.dumps({"bench": "soak", "consumers_per_fleet": args.consumers,
                      "seconds": round(time.perf_counter() - started, 1), "campaigns": results,
                      "total": total,
                      "goal_met": not any(total[k] for k in keys[2:])}, indent=2))


if __name__ == "__main__":
    main()
