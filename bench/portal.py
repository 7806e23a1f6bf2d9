"""Portal latency on a 10,000-consumer campaign, served by a real Airflow API server.

Builds a campaign store as a large campaign leaves it (10,000 consumers planned; most applied,
some failed, skipped, escalated or rolled back; ~35,000 audit events), starts Airflow's
api-server alone on it (no scheduler: nothing runs), and times the portal's list endpoints and
pages over HTTP, as an authenticated user. Prints JSON: p50 / p95 / max milliseconds per
route; goal (issue 11): p95 < 300 ms for every list endpoint and page.

    python bench/portal.py [--consumers 10000] [--requests 40]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins"), str(ROOT / "tests")]
GOAL_MS = 300.0
CAMPAIGN, RUN = "bench-10k", "scheduled__2026-11-01T00:00:00+00:00"

SPEC = """campaign: bench-10k
title: A large migration (10,000 consumers)
owners: [data-platform]
warehouse: duckdb:///warehouse.duckdb
source: analytics.plays
target: analytics_v2.plays
columns: {user_id: account_id}
rollout: {schedule: null, approvers: [admin]}
"""


def build_store(home: Path, consumers: int, seed: int = 11) -> dict[str, int]:
    """The store (and a run directory) of a campaign that planned ``consumers`` and applied
    most of them; written in bulk, not through ``record`` (one transaction, not 35,000)."""
    import sqlalchemy as sa

    from skein.store import CampaignStore, audit

    rng = random.Random(seed)
    store = CampaignStore(f"sqlite:///{home / 'store.db'}")
    owners = [f"team-{n:02d}" for n in range(60)]
    rows, events, at = [], [], datetime(2026, 11, 1, tzinfo=UTC)

    def event(action, consumer=None, wave=None, **detail):
        nonlocal at
        at += timedelta(milliseconds=250)
        events.append({"at": at, "campaign": CAMPAIGN, "run_id": RUN, "actor": "task:bench",
                       "action": action, "consumer": consumer, "wave": wave, "before_hash": None,
                       "after_hash": None, "detail": json.dumps(detail)})

    event("run_started")
    event("planned")
    for n in range(consumers):
        cid = f"repo-{n % 80:02d}/models/consumer_{n:05d}.sql"
        status = rng.choices(["patched", "escalated", "unchanged", "failed"], [80, 8, 10, 2])[0]
        wave = "canary" if n < consumers // 20 else "everyone"
        rows.append({"consumer": cid, "seq": n, "owner": rng.choice(owners), "tier": rng.choice([1, 2, 3, None]),
                     "kind": rng.choice(["sql_file", "dbt_model", "view"]), "impact": "direct" if status != "unchanged" else "transitive",
                     "wave": wave if status in ("patched", "unchanged") else None, "plan_status": status,
                     "reason": None if status == "patched" else f"{status}: a reason", "agent": "rule",
                     "changes": 2, "simulation": "pass", "repo": None, "path": None})
        event("patched" if status == "patched" else "escalated", cid)
        if status == "patched" and rng.random() < 0.85:
            event("apply_started", cid, wave)
            event(rng.choices(["applied", "apply_failed"], [97, 3])[0], cid, wave)
            if rng.random() < 0.01:
                event("rolled_back", cid)
        elif status == "patched" and rng.random() < 0.2:
            event(rng.choice(["consumer_skipped", "consumer_escalated"]), cid)
    store.index_consumers(CAMPAIGN, RUN, rows)
    with store.engine.begin() as conn:
        conn.execute(sa.insert(audit), events)
    store.rebuild_latest()  # what record() keeps up to date, event by event
    store.dispose()
    return {"consumers": len(rows), "audit_events": len(events)}


def timed(url: str, token: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            assert response.status == 200, url
        out.append((time.perf_counter() - started) * 1000)
    return out


def routes(sample: str) -> dict[str, str]:
    base = f"/skein/api/v1/campaigns/{CAMPAIGN}"
    return {
        "api: catalog": "/skein/api/v1/campaigns",
        "api: campaign": base,
        "api: consumers, first page": f"{base}/consumers?limit=50",
        "api: consumers, page 150": f"{base}/consumers?limit=50&offset=7500",
        "api: consumers, filtered": f"{base}/consumers?status=applied&owner=team-07&limit=50",
        "api: consumers, search": f"{base}/consumers?search=consumer_09&limit=50",
        "api: consumer": f"{base}/consumers/{sample}",
        "api: burndown": f"{base}/burndown",
        "api: audit": f"{base}/audit?limit=100&offset=1000",
        "page: catalog": "/skein/",
        "page: campaign": f"/skein/campaigns/{CAMPAIGN}",
        "page: campaign, filtered, page 20": f"/skein/campaigns/{CAMPAIGN}?status=applied&offset=1000",
        "page: consumer": f"/skein/campaigns/{CAMPAIGN}/consumers/{sample}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consumers", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args(argv)
    from airflow_env import AirflowEnv

    with tempfile.TemporaryDirectory(prefix="skein-bench-portal-") as tmp:
        root = Path(tmp)
        (root / "campaigns").mkdir()
        (root / "campaigns" / f"{CAMPAIGN}.yaml").write_text(SPEC)
        env = AirflowEnv(root / "airflow", root / "campaigns", {"admin": "admin"})
        (root / "airflow" / "skein").mkdir(parents=True)
        sizes = build_store(root / "airflow" / "skein", args.consumers)
        env.airflow("db", "migrate")
        env.spawn("api-server")
        try:
            deadline = time.time() + 180
            while True:
                try:
                    env.get("/api/v2/monitor/health", user=None)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(1)
            token = env.token("admin")
            sample = "repo-07/models/consumer_04567.sql"
            results = {}
            for name, path in routes(sample).items():
                timed(env.base + path, token, 2)  # warm: the first call imports and opens
                samples = sorted(timed(env.base + path, token, args.requests))
                results[name] = {"p50_ms": round(statistics.median(samples), 1),
                                 "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 1),
                                 "max_ms": round(samples[-1], 1)}
        finally:
            env.stop()
    worst = max(r["p95_ms"] for r in results.values())
    print(json.dumps({"goal_p95_ms": GOAL_MS, "worst_p95_ms": worst, "ok": worst < GOAL_MS,
                      **sizes, "requests_per_route": args.requests, "routes": results}, indent=2))
    return 0 if worst < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
