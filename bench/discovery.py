"""Discovery throughput on a large demo fleet, next to a bare parse with as many processes.

Prints JSON. For each process count N (1 and one per core): ``--repeat`` interleaved rounds,
each timing ``discover`` with N workers and a bare ``sqlglot.parse`` of the same texts in a
pool of N processes (pool start-up counted on both sides: discovery starts its own). The cost
is taken per round (discovery seconds / bare-parse seconds) and reported as median, min and
max, with the load average. Goals: issue 2, the 10,000-consumer catalog in <= 60 s on 2 cores;
issue 22, discovery at most 4x the bare parse with the same process count.

    python bench/discovery.py [--consumers 10000] [--repeat 3] [--out bench/out/fleet]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

# The floor both benches divide by: sqlglot's parse and nothing else (bench/ is on sys.path
# when a bench runs as a script).
from rewrite import bare_parse as parse_chunk

GOAL_VS_PARSE = 4.0


def bare_parse(texts: list[tuple[str, str]], processes: int) -> int:
    """``parse_chunk`` over ``processes`` processes (in this one when 1), as evenly split."""
    if processes == 1:
        return parse_chunk(texts)
    chunks = [texts[i::processes] for i in range(processes)]
    # fork, like discovery's pool on Linux: neither side pays a fresh interpreter per worker
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return sum(pool.map(parse_chunk, chunks))


def spread(values: list[float], digits: int = 2) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def rounds(campaign_path: Path, texts: list, processes: int, repeat: int, reference):
    """``repeat`` interleaved rounds of discovery and the bare parse, both on ``processes``
    processes; the figures, and the report (which must be the same in every round)."""
    from skein.discovery import discover
    from skein.spec import load_campaign

    seconds = {"discover": [], "bare_parse": []}
    for _ in range(repeat):
        started = time.perf_counter()
        report = discover(load_campaign(campaign_path), workers=processes)
        seconds["discover"].append(time.perf_counter() - started)
        assert reference is None or report == reference, "discovery differs across runs"
        reference = report
        started = time.perf_counter()
        bare_parse(texts, processes)
        seconds["bare_parse"].append(time.perf_counter() - started)
    return {
        "discover_s": spread(seconds["discover"]),
        "bare_parse_s": spread(seconds["bare_parse"]),
        "discover_files_per_s": round(len(texts) / statistics.median(seconds["discover"]), 1),
        "bare_parse_files_per_s": round(len(texts) / statistics.median(seconds["bare_parse"]), 1),
        "discover_vs_bare_parse": spread([d / p for d, p in zip(seconds["discover"], seconds["bare_parse"])]),
    }, reference


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consumers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="bench/out/discovery-fleet")
    args = parser.parse_args()

    import sqlglot

    from skein.catalog import build_catalog
    from skein.demo.fleet import build_demo_fleet
    from skein.discovery import connect
    from skein.spec import load_campaign

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    campaign_path = build_demo_fleet(out, consumers=args.consumers, seed=args.seed)
    fleet_s = time.perf_counter() - started

    campaign = load_campaign(campaign_path)
    started = time.perf_counter()
    catalog = build_catalog(campaign, connect(campaign), workers=os.cpu_count())
    catalog_s = time.perf_counter() - started
    texts = [(c.sql, c.dialect) for c in catalog.consumers]
    parse_failures = bare_parse(texts, 1)  # warm-up: dialect tables, imports

    load_before = os.getloadavg()
    runs, reference = {}, None
    for processes in sorted({1, os.cpu_count() or 1}):
        runs[f"{processes}_process"], reference = rounds(campaign_path, texts, processes, args.repeat, reference)
    assert reference.scanned == len(texts)
    widest = runs[f"{os.cpu_count() or 1}_process"]
    print(json.dumps({
        "benchmark": "discovery",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "sqlglot": sqlglot.__version__},
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "consumers": reference.scanned,
        "impacted": len(reference.consumers),
        "counts": reference.counts,
        "parse_failures": parse_failures,
        "fleet_build_s": round(fleet_s, 2),
        "catalog_build_s": round(catalog_s, 2),
        "repeat": args.repeat,
        "runs": runs,
        "goal_catalog_s": 60,
        "goal_vs_bare_parse": GOAL_VS_PARSE,
        "goals": {"catalog_within_60_s": catalog_s <= 60,
                  "discover_within_4x_bare_parse_same_processes":
                      widest["discover_vs_bare_parse"]["median"] <= GOAL_VS_PARSE},
    }, indent=2))


if __name__ == "__main__":
    main()
