"""Parity check throughput next to the floor (a bare fingerprint scan) and reladiff.

Prints JSON. For each size (default 1M and 10M rows, 6 columns, ~0.1% of rows differing)
it times, in one process on one DuckDB file: the floor (count + sum of row hashes over
both tables), ``skein.simulation.parity.compare_tables`` with a key and without one
(EXCEPT ALL), and reladiff's diff of the same tables on the same key. Goals (issue 4):
Skein's check within 3x of the floor, faster than reladiff.

    python bench/parity.py [--rows 1000000 10000000] [--out bench/out/parity.duckdb]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def build(con, rows: int) -> None:
    con.execute("DROP TABLE IF EXISTS old; DROP TABLE IF EXISTS new")
    con.execute(f"""
        CREATE TABLE old AS SELECT range AS id, range % 1000 AS user_id, hash(range) % 100000 AS amount,
               (range % 97) * 0.5::DOUBLE AS score, 'c' || (range % 50) AS category,
               DATE '2024-01-01' + CAST(range % 365 AS INTEGER) AS day
        FROM range({rows})""")
    # ~0.1% of rows differ in one value; the rest are equal
    con.execute("""
        CREATE TABLE new AS SELECT id, user_id,
               CASE WHEN hash(id) % 1000 = 0 THEN amount + 1 ELSE amount END AS amount,
               score, category, day FROM old""")


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def ge_overhead_ms(repeat: int = 30) -> dict:
    """GX validation of one consumer's output (profile suite, ~700 rows), after the one-time
    import: the per-consumer cost the simulation adds."""
    import duckdb

    from skein.simulation.expectations import profile_expectations, validate

    con = duckdb.connect()
    table = con.sql("SELECT range AS id, range % 17 AS user_id, 'c' || (range % 5) AS category, "
                    "range * 0.5 AS score, range % 2 = 0 AS flag FROM range(700)").to_arrow_table()
    specs = profile_expectations(table)
    started = time.perf_counter()
    validate(specs, table)  # warm-up: imports GX and builds the context
    first_s = time.perf_counter() - started
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = validate(specs, table)
        times.append((time.perf_counter() - started) * 1000)
        assert result.passed
    return {"expectations": len(specs), "first_call_s": round(first_s, 2),
            "median_ms": round(statistics.median(times), 1), "p90_ms": round(sorted(times)[int(0.9 * repeat)], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--out", default="bench/out/parity.duckdb")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import duckdb
    import reladiff

    from skein.simulation.parity import compare_tables

    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    runs = []
    for rows in args.rows:
        con = duckdb.connect(str(path))
        build(con, rows)
        floor_s, _ = timed(lambda: [con.sql(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {t} t").fetchall()
                                    for t in ("old", "new")], args.repeat)
        keyed_s, keyed = timed(lambda: compare_tables(con, "old", "new", key=["id"]), args.repeat)
        except_s, unkeyed = timed(lambda: compare_tables(con, "old", "new"), args.repeat)
        con.close()
        db = f"duckdb://{path.resolve()}"

        def run_reladiff():
            a = reladiff.connect_to_table(db, "old", "id")
            b = reladiff.connect_to_table(db, "new", "id")
            differences = sum(1 for _ in reladiff.diff_tables(a, b, extra_columns=(
                "user_id", "amount", "score", "category", "day")))
            a.database.close()
            b.database.close()
            return differences

        reladiff_s, reladiff_rows = timed(run_reladiff, 1)
        runs.append({
            "rows": rows,
            "differing_rows": keyed.only_old,
            "floor_s": round(floor_s, 3),
            "skein_keyed_s": round(keyed_s, 3),
            "skein_except_all_s": round(except_s, 3),
            "reladiff_s": round(reladiff_s, 3),
            "reladiff_differences": reladiff_rows,  # each differing row once per side
            "skein_keyed_rows_per_s": round(2 * rows / keyed_s),
            "keyed_vs_floor": round(keyed_s / floor_s, 2),
            "except_all_vs_floor": round(except_s / floor_s, 2),
            "keyed_vs_reladiff": round(keyed_s / reladiff_s, 3),
            "found_same_rows": keyed.only_old * 2 == reladiff_rows and unkeyed.only_old == keyed.only_old,
        })
    ge = ge_overhead_ms()
    goal = all(r["keyed_vs_floor"] <= 3 and r["keyed_vs_reladiff"] < 1 for r in runs) \
        and ge["median_ms"] <= 60
    print(json.dumps({"benchmark": "parity", "cores": os.cpu_count(), "runs": runs,
                      "great_expectations_per_consumer": ge,
                      "goals": "keyed check within 3x of the floor, faster than reladiff, "
                               "GX <= 60 ms per consumer at the median",
                      "goal_met": goal}, indent=2))


if __name__ == "__main__":
    main()
