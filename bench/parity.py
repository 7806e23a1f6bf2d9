"""Parity check throughput next to the floor (a bare fingerprint scan) and reladiff.

Prints JSON. For each size (default 1M and 10M rows, 6 columns, ~0.1% of rows differing)
it times, in one process on one DuckDB file: the floor (count + sum of row hashes over
both tables), ``skein.simulation.parity.compare_tables`` with a key and without one
(multiset difference, EXCEPT ALL's answer), and reladiff's diff of the same tables on the
same key. Skein is timed twice: with the new output in the old one's row order (``new``
is derived from ``old``, as a rewrite of the same query tends to produce) and shuffled
(``new_shuffled``, as a different plan may produce), since the check sets differing rows
apart by position when it can and by hash bucket otherwise. Goals (issue 4): Skein's
check within 3x of the floor, faster than reladiff.

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
    con.execute("DROP TABLE IF EXISTS old; DROP TABLE IF EXISTS new; DROP TABLE IF EXISTS new_shuffled")
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
    con.execute("CREATE TABLE new_shuffled AS SELECT * FROM new ORDER BY hash(id + 7)")


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def interleaved(fns: dict, repeat: int) -> dict:
    """Median seconds and last result of each function, run in turn ``repeat`` times, so a
    burst of load on the machine hits all of them alike (ratios matter, not seconds)."""
    times = {name: [] for name in fns}
    results = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            started = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: (statistics.median(times[name]), results[name]) for name in fns}


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
    parser.add_argument("--repeat", type=int, default=5)
    # Simulation sandboxes run DuckDB on one thread (skein.simulation.sandbox), so that is how
    # the check runs in Skein; 0 keeps DuckDB's default (one thread per core) for comparison.
    parser.add_argument("--threads", type=int, default=1)
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
        if args.threads:
            con.execute(f"SET threads = {int(args.threads)}")
        checks = {}
        for name in ("new", "new_shuffled"):
            done = interleaved({
                "floor": lambda: [con.sql(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {t} t").fetchall()
                                  for t in ("old", name)],
                "keyed": lambda: compare_tables(con, "old", name, key=["id"]),
                "no_key": lambda: compare_tables(con, "old", name)}, args.repeat)
            checks[name] = done["floor"][0], *done["keyed"], *done["no_key"]
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
        floor_s, keyed_s, keyed, no_key_s, no_key = checks["new"]
        floor_x, keyed_x, keyed_shuffled, no_key_x, no_key_shuffled = checks["new_shuffled"]
        runs.append({
            "rows": rows,
            "differing_rows": keyed.only_old,
            "floor_s": round(floor_s, 3),
            "skein_keyed_s": round(keyed_s, 3),
            "skein_no_key_s": round(no_key_s, 3),
            "reladiff_s": round(reladiff_s, 3),
            "reladiff_differences": reladiff_rows,  # each differing row once per side
            "skein_keyed_rows_per_s": round(2 * rows / keyed_s),
            "keyed_vs_floor": round(keyed_s / floor_s, 2),
            "no_key_vs_floor": round(no_key_s / floor_s, 2),
            "keyed_vs_reladiff": round(keyed_s / reladiff_s, 3),
            "shuffled": {  # the same comparison, new output in another row order
                "floor_s": round(floor_x, 3),
                "skein_keyed_s": round(keyed_x, 3),
                "skein_no_key_s": round(no_key_x, 3),
                "keyed_vs_floor": round(keyed_x / floor_x, 2),
                "no_key_vs_floor": round(no_key_x / floor_x, 2),
                "keyed_vs_reladiff": round(keyed_x / reladiff_s, 3),
            },
            "found_same_rows": keyed.only_old * 2 == reladiff_rows and
            all(r.only_old == r.only_new == keyed.only_old for r in (keyed, no_key, keyed_shuffled, no_key_shuffled)),
        })
    ge = ge_overhead_ms()
    goals = {
        "keyed_within_3x_of_floor": all(r["keyed_vs_floor"] <= 3 for r in runs),
        "keyed_within_3x_of_floor_shuffled": all(r["shuffled"]["keyed_vs_floor"] <= 3 for r in runs),
        "faster_than_reladiff": all(max(r["keyed_vs_reladiff"], r["shuffled"]["keyed_vs_reladiff"]) < 1
                                    for r in runs),
        "ge_median_within_60_ms": ge["median_ms"] <= 60,
    }
    print(json.dumps({"benchmark": "parity", "cores": os.cpu_count(), "duckdb_threads": args.threads or "default", "runs": runs,
                      "great_expectations_per_consumer": ge,
                      "goals": goals, "goal_met": all(goals.values())}, indent=2))


if __name__ == "__main__":
    main()
