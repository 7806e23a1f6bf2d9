"""Rule-agent throughput next to bare sqlglot parse + generate of the same queries.

Prints JSON: consumers/s for ``skein.agents.rule.rewrite`` over every consumer that
discovery marks ``rewrite`` in a demo fleet, plus the TPC-H/TPC-DS queries of the parity
suite's migrations (tests/parity), and consumers/s for ``sqlglot.parse`` + ``.sql()`` of the
same texts, measured in the same process: warm-up pass, then ``--repeat`` interleaved
passes of each, median taken. Goal: agent throughput / parse+generate throughput >= 0.6.

The agent keeps per-process caches of what repeats across a campaign's consumers (parsed
replacement texts, campaign patterns, rendered identifiers); ``*_cold`` figures clear them
before each pass, i.e. every consumer is the first of its kind.

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
GOAL_RATIO = 0.6


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
            pairs.append((request_for(campaign, catalog, consumer), consumer.sql))
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


def clear_agent_caches() -> None:
    """The agent's per-process caches of text-keyed results (see the module docstring)."""
    from skein.agents import canonical, edit_check
    from skein.rewrite import render
    from skein.rewrite.rules import output_names

    for cached in (edit_check._fragment, edit_check._is_campaign_expression, edit_check._table,
                   canonical.campaign_pattern, render.mapped_expression, render._identifier,
                   render.is_atomic, output_names.duckdb_column_name):
        cached.cache_clear()


def timed(fn, *args):
    started, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - started, result, time.process_time() - cpu


def rounds(repeat: int, rewrite, requests, texts, before=None):
    """``repeat`` interleaved passes of the agent and of parse+generate: wall and CPU seconds."""
    wall, cpu = ([], []), ([], [])
    outcomes = None
    for _ in range(repeat):
        if before is not None:
            before()
        seconds, again, used = timed(agent_pass, rewrite, requests)
        assert outcomes is None or again == outcomes, "the agent is not deterministic across passes"
        outcomes = again
        wall[0].append(seconds)
        cpu[0].append(used)
        seconds, _, used = timed(parse_generate, texts)
        wall[1].append(seconds)
        cpu[1].append(used)
    return wall, cpu


def summary(wall, cpu, n: int) -> dict:
    """Ratios of medians (wall, as the goal is stated; CPU, which another process's load
    disturbs less) and the median of the per-round wall ratios."""
    med = statistics.median
    return {"agent_s": [round(s, 3) for s in wall[0]], "parse_generate_s": [round(s, 3) for s in wall[1]],
            "agent_consumers_per_s": round(n / med(wall[0]), 1),
            "parse_generate_consumers_per_s": round(n / med(wall[1]), 1),
            "ratio": round(med(wall[1]) / med(wall[0]), 3),
            "ratio_cpu": round(med(cpu[1]) / med(cpu[0]), 3),
            "ratio_median_of_rounds": round(med(b / a for a, b in zip(*wall)), 3)}


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

    out = Path(args.out)
    started = time.perf_counter()
    pairs, discovery_counts = fleet_requests(out / "fleet", args.consumers, args.seed)
    fleet_n = len(pairs)
    tpc_note = "included"
    if not args.no_tpc:
        try:
            pairs += tpc_requests(out / "tpc")
        except Exception as exc:  # noqa: BLE001 - the generator may be missing: say so
            tpc_note = f"skipped: {type(exc).__name__}: {exc}"
    else:
        tpc_note = "skipped: --no-tpc"
    setup_s = time.perf_counter() - started
    requests = [r for r, _ in pairs]
    texts = [(sql, r.dialect) for r, sql in pairs]

    # Warm-up: imports, dialect tables, the dbt project cache (kept per project in real runs).
    outcomes = agent_pass(rewrite, requests)
    parse_failures = parse_generate(texts)
    n = len(requests)
    warm = summary(*rounds(args.repeat, rewrite, requests, texts), n)
    cold = summary(*rounds(args.repeat, rewrite, requests, texts, before=clear_agent_caches), n)
    ratio = warm["ratio"]
    # One more timed pass per group: where the time goes (fleet vs TPC).
    groups = {}
    for group, part in (("fleet", slice(0, fleet_n)), ("tpc", slice(fleet_n, n))):
        if not requests[part]:
            continue
        a = timed(agent_pass, rewrite, requests[part])[0]
        b = timed(parse_generate, texts[part])[0]
        groups[group] = {"queries": len(requests[part]),
                         "avg_chars": round(sum(len(r.text) for r in requests[part]) / len(requests[part])),
                         "agent_consumers_per_s": round(len(requests[part]) / a, 1),
                         "parse_generate_consumers_per_s": round(len(requests[part]) / b, 1),
                         "ratio": round(b / a, 3)}
    escalations = Counter()
    for r in requests:
        result = rewrite(r)
        if result.kind == "escalation":
            escalations[_reason_kind(result.reason)] += 1
    print(json.dumps({
        "benchmark": "rewrite",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "sqlglot": sqlglot.__version__,
                    "sqlglot_compiled": sqlglot.parser.__file__.endswith(".so")},
        "queries": n,
        "fleet_consumers": args.consumers,
        "fleet_rewrite_requests": fleet_n,
        "fleet_discovery_counts": discovery_counts,
        "tpc_requests": n - fleet_n,
        "tpc": tpc_note,
        "avg_chars": round(sum(len(r.text) for r in requests) / max(n, 1)),
        "agent_outcomes": dict(outcomes),
        "escalation_reasons": dict(escalations.most_common()),
        "parse_failures": parse_failures,
        "setup_s": round(setup_s, 2),
        "repeat": args.repeat,
        **warm,
        "cold": cold,
        "by_group": groups,
        "goal_ratio": GOAL_RATIO,
        "goal_met": ratio >= GOAL_RATIO,
    }, indent=2))


def _reason_kind(reason: str) -> str:
    """An escalation reason without its line number and names, to count kinds."""
    import re

    reason = re.sub(r"^(line \d+: |statement \d+: )", "", reason)
    return re.sub(r"[`'][^`']*[`']|\b\w+\.\w+\b", "…", reason)[:90]


if __name__ == "__main__":
    main()
