"""Rule-agent throughput next to a bare sqlglot parse and parse + generate of the same queries.

Prints JSON. Two groups reported apart, never mixed: ``fleet`` (every consumer discovery
marks ``rewrite`` in a demo fleet; also split into ``fleet_dbt`` and ``fleet_sql_and_views``) and ``tpc`` (the TPC-H/TPC-DS queries of the parity
suite's migrations, long texts that lift an average). Per group, ``--repeat`` interleaved
rounds, each: clear every cache the engine keeps, time the agent (cold: every text is the
first of its kind), time the agent again (warm), time a bare ``sqlglot.parse`` (the floor:
what the agent must at least do), time ``sqlglot.parse`` + ``.sql()``. Ratios are taken per
round (``floor_s / agent_s`` = agent throughput / floor throughput) and reported as median,
min and max, with the load average. Goal (issue 22): cold agent throughput on fleet
consumers >= 0.5 of a bare parse.

    python bench/rewrite.py [--consumers 1500] [--repeat 5] [--out bench/out/rewrite-fleet]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO = 0.5


def fleet_requests(out: Path, consumers: int, seed: int):
    """(request, text the catalog parsed) for each consumer discovery marks ``rewrite``."""
    from skein.agents.requests import request_for
    from skein.catalog import build_catalog
    from skein.demo.fleet import build_demo_fleet
    from skein.discovery import assess_impact, check_against_catalog, connect
    from skein.spec import load_campaign

    if out.exists():
        shutil.rmtree(out)
    campaign = load_campaign(build_demo_fleet(out, consumers=consumers, seed=seed))
    warehouse = connect(campaign)
    check_against_catalog(campaign, warehouse.schemas())
    catalog = build_catalog(campaign, warehouse, workers=os.cpu_count())
    report = assess_impact(campaign, catalog)
    by_id = catalog.by_id()
    pairs = []
    for impacted in report.consumers:
        if impacted.status == "rewrite":
            consumer = by_id[impacted.id]
            pairs.append((request_for(campaign, catalog, consumer), consumer.sql, consumer.kind))
    return pairs, report.counts


def tpc_requests(out: Path):
    """(request, text) for every TPC query that reads a table the parity suite migrates."""
    sys.path.insert(0, str(ROOT / "tests"))
    from parity.harness import make_baseline, migrated, reads_source, request_for
    from parity.migrations import MIGRATIONS
    from parity.tpc import generate, load_queries

    pairs = []
    for benchmark, migrations in MIGRATIONS.items():
        baseline = make_baseline(benchmark, generate(benchmark, out / benchmark), load_queries(benchmark))
        try:
            for migration in migrations:
                with migrated(baseline, migration) as target:
                    for name, sql in baseline.queries.items():
                        if reads_source(baseline.con, sql):
                            pairs.append((request_for(baseline, migration, name, target), sql))
        finally:
            baseline.close()
    return pairs


def bare_parse(texts: list[tuple[str, str]]) -> int:
    """The floor: ``sqlglot.parse`` (what ``parse_one`` runs; a consumer may hold several
    statements, which ``parse_one`` refuses) and nothing else."""
    import sqlglot

    failures = 0
    for sql, dialect in texts:
        try:
            sqlglot.parse(sql, read=dialect)
        except sqlglot.errors.SqlglotError:
            failures += 1
    return failures


def parse_generate(texts: list[tuple[str, str]]) -> int:
    import sqlglot

    failures = 0
    for sql, dialect in texts:
        try:
            for statement in sqlglot.parse(sql, read=dialect):
                if statement is not None:
                    statement.sql(dialect=dialect)
        except sqlglot.errors.SqlglotError:
            failures += 1
    return failures


def agent_pass(rewrite, requests) -> Counter:
    return Counter(rewrite(r).kind for r in requests)


def clear_engine_caches() -> int:
    """Clear every functools cache of every loaded ``skein`` module (found, not listed, so a
    cache added later is cleared too): as cold as a fresh process, without the imports.
    Returns how many caches were cleared."""
    cleared = 0
    for name, module in list(sys.modules.items()):
        if not (name == "skein" or name.startswith("skein.")) or module is None:
            continue
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) == name and callable(getattr(value, "cache_clear", None)):
                value.cache_clear()
                cleared += 1
    return cleared


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def spread(values: list[float], digits: int = 3) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def measure_group(rewrite, requests, texts, repeat: int) -> dict:
    """``repeat`` interleaved rounds of cold agent, warm agent, bare parse, parse+generate."""
    seconds = {"agent_cold": [], "agent_warm": [], "bare_parse": [], "parse_generate": []}
    outcomes = None
    for _ in range(repeat):
        clear_engine_caches()
        s, again = timed(agent_pass, rewrite, requests)
        assert outcomes is None or again == outcomes, "the agent is not deterministic across passes"
        outcomes = again
        seconds["agent_cold"].append(s)
        seconds["agent_warm"].append(timed(agent_pass, rewrite, requests)[0])
        seconds["bare_parse"].append(timed(bare_parse, texts)[0])
        seconds["parse_generate"].append(timed(parse_generate, texts)[0])
    n = len(requests)
    per_round = lambda a, b: [y / x for x, y in zip(seconds[a], seconds[b])]  # noqa: E731
    return {
        "queries": n,
        "avg_chars": round(sum(len(r.text) for r in requests) / n),
        "agent_outcomes": dict(outcomes),
        "seconds": {k: spread(v) for k, v in seconds.items()},
        "per_s": {k: round(n / statistics.median(v), 1) for k, v in seconds.items()},
        "cold_vs_bare_parse": spread(per_round("agent_cold", "bare_parse")),
        "cold_vs_parse_generate": spread(per_round("agent_cold", "parse_generate")),
        "warm_vs_bare_parse": spread(per_round("agent_warm", "bare_parse")),
        "warm_vs_parse_generate": spread(per_round("agent_warm", "parse_generate")),
    }


def collect_groups(out: Path, args) -> tuple[dict, dict, str]:
    """Requests per group (see the module docstring), discovery's counts, what became of TPC."""
    groups_in = {}
    fleet, discovery_counts = fleet_requests(out / "fleet", args.consumers, args.seed)
    groups_in["fleet"] = [(r, sql) for r, sql, _ in fleet]
    # Beside the headline, the fleet split by consumer kind: a dbt model's request is its
    # Jinja text, which the agent renders (and the bare parse does not).
    groups_in["fleet_dbt"] = [(r, sql) for r, sql, kind in fleet if kind == "dbt_model"]
    groups_in["fleet_sql_and_views"] = [(r, sql) for r, sql, kind in fleet if kind != "dbt_model"]
    tpc_note = "skipped: --no-tpc"
    if not args.no_tpc:
        try:
            groups_in["tpc"] = tpc_requests(out / "tpc")
            tpc_note = "included"
        except Exception as exc:  # noqa: BLE001 - the generator may be missing: say so
            tpc_note = f"skipped: {type(exc).__name__}: {exc}"
    return groups_in, discovery_counts, tpc_note


def measure_groups(rewrite, groups_in: dict, repeat: int) -> tuple[dict, Counter, dict]:
    """``measure_group`` for each non-empty group, after a warm-up pass of its own."""
    groups, escalations, parse_failures = {}, Counter(), {}
    for group, pairs in groups_in.items():
        if not pairs:
            continue
        requests = [r for r, _ in pairs]
        texts = [(sql, r.dialect) for r, sql in pairs]
        # Warm-up: imports and dialect tables, which a campaign pays once per process.
        agent_pass(rewrite, requests)
        parse_failures[group] = bare_parse(texts)
        groups[group] = measure_group(rewrite, requests, texts, repeat)
        for r in requests if group in ("fleet", "tpc") else ():  # the splits repeat the fleet
            result = rewrite(r)
            if result.kind == "escalation":
                escalations[f"{group}: {_reason_kind(result.reason)}"] += 1
    return groups, escalations, parse_failures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consumers", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="bench/out/rewrite-fleet")
    parser.add_argument("--no-tpc", action="store_true", help="demo fleet only")
    args = parser.parse_args()

    import sqlglot
    import sqlglot.parser

    from skein.agents.rule import rewrite

    started = time.perf_counter()
    groups_in, discovery_counts, tpc_note = collect_groups(Path(args.out), args)
    setup_s = time.perf_counter() - started
    load_before = os.getloadavg()
    groups, escalations, parse_failures = measure_groups(rewrite, groups_in, args.repeat)
    headline = groups["fleet"]["cold_vs_bare_parse"]
    print(json.dumps({
        "benchmark": "rewrite",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "sqlglot": sqlglot.__version__,
                    "sqlglot_compiled": sqlglot.parser.__file__.endswith(".so")},
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "fleet_consumers": args.consumers,
        "fleet_discovery_counts": discovery_counts,
        "tpc": tpc_note,
        "caches_cleared_per_round": clear_engine_caches(),
        "parse_failures": parse_failures,
        "escalation_reasons": dict(escalations.most_common()),
        "setup_s": round(setup_s, 2),
        "repeat": args.repeat,
        "headline_fleet_cold_vs_bare_parse": headline,
        "by_group": groups,
        "goal_ratio": GOAL_RATIO,
        "goal_met": headline["median"] >= GOAL_RATIO,
    }, indent=2))


def _reason_kind(reason: str) -> str:
    """An escalation reason without its line number and names, to count kinds."""
    import re

    reason = re.sub(r"^(line \d+: |statement \d+: )", "", reason)
    return re.sub(r"[`'][^`']*[`']|\b\w+\.\w+\b", "…", reason)[:90]


if __name__ == "__main__":
    main()
