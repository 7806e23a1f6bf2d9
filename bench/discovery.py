"""Discovery throughput on a large demo fleet.

Prints JSON: files/s for the whole catalog + impact analysis with one process and
with one process per core, next to a bare ``sqlglot.parse`` of the same texts in
the same run (the floor every approach pays). Goal (issue 2): the 10,000-consumer
catalog built in <= 60 s on 2 cores.

    python bench/discovery.py [--consumers 10000] [--out bench/out/fleet]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consumers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="bench/out/discovery-fleet")
    args = parser.parse_args()

    import sqlglot

    from skein.catalog import build_catalog
    from skein.demo.fleet import build_demo_fleet
    from skein.discovery import connect, discover
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
    consumers = catalog.consumers
    started = time.perf_counter()
    for c in consumers:
        try:
            sqlglot.parse(c.sql, read=c.dialect)
        except sqlglot.errors.SqlglotError:
            pass
    parse_s = time.perf_counter() - started

    runs = {}
    for workers in (1, os.cpu_count() or 1):
        started = time.perf_counter()
        report = discover(load_campaign(campaign_path), workers=workers)
        runs[workers] = (time.perf_counter() - started, report)
    files = report.scanned
    assert files == len(consumers)
    serial_s, report = runs[1]
    parallel_s, parallel_report = runs[max(runs)]
    assert parallel_report == report, "parallel and serial discovery disagree"
    print(json.dumps({
        "benchmark": "discovery",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "sqlglot": sqlglot.__version__},
        "consumers": files,
        "impacted": len(report.consumers),
        "counts": report.counts,
        "fleet_build_s": round(fleet_s, 2),
        "catalog_build_s": round(catalog_s, 2),
        "bare_parse_s": round(parse_s, 2),
        "bare_parse_files_per_s": round(files / parse_s, 1),
        "discover_1_process_s": round(serial_s, 2),
        "discover_1_process_files_per_s": round(files / serial_s, 1),
        f"discover_{max(runs)}_processes_s": round(parallel_s, 2),
        f"discover_{max(runs)}_processes_files_per_s": round(files / parallel_s, 1),
        "parallel_speedup": round(serial_s / parallel_s, 2),
        "cost_vs_bare_parse": round(parallel_s / parse_s, 2),
        "goal_catalog_s": 60,
        "goal_met": catalog_s <= 60,
    }, indent=2))


if __name__ == "__main__":
    main()
