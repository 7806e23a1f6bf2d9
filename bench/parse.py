"""Parse time of the campaign DAG files with 100 campaigns in the campaigns folder.

Prints JSON: seconds for Airflow's own ``DagBag`` over ``dags/`` (both DAG files, as the
dag-processor parses them), and for the factory alone (``build_campaign_dags``: reading and
validating the campaign files, building the DAGs), each in a fresh process after Airflow is
imported (that import is paid once per parsing process, whatever the number of DAGs).
Median of ``--repeat`` runs. Goal (issue 5): <= 2 s for 100 campaign files.

    python bench/parse.py [--campaigns 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 2.0

PROBE = """
import json, sys, time
import airflow.sdk  # noqa: F401 - paid once per parsing process, not per campaign
from airflow.providers.standard.operators.hitl import HITLOperator  # noqa: F401
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
if sys.argv[1] == "dagbag":
    bag = DagBag(dag_folder=sys.argv[2])
    dags, errors = len(bag.dags), len(bag.import_errors)
else:
    from skein_airflow.campaign_dags import build_campaign_dags
    built = build_campaign_dags()
    dags, errors = len(built.dags), len(built.errors)
print(json.dumps({"seconds": time.perf_counter() - started, "dags": dags, "errors": errors}))
"""


def campaigns(directory: Path, count: int) -> None:
    """``count`` copies of the demo campaign with distinct ids (parsing never opens the
    warehouse, so it need not exist)."""
    from skein.demo.fleet import campaign_yaml

    directory.mkdir(parents=True, exist_ok=True)
    text = campaign_yaml()
    for n in range(count):
        (directory / f"c{n:03d}.yaml").write_text(text.replace("campaign: plays-v2", f"campaign: c{n:03d}"))


def measure(mode: str, directory: Path, home: Path) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "SKEIN_CAMPAIGNS_DIR": str(directory),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "include")])}
    proc = subprocess.run([sys.executable, "-c", PROBE, mode, str(ROOT / "dags")], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="skein-bench-parse-") as tmp:
        directory = Path(tmp) / "campaigns"
        campaigns(directory, args.campaigns)
        results = {}
        for mode in ("dagbag", "factory"):
            runs = [measure(mode, directory, Path(tmp) / "airflow") for _ in range(args.repeat)]
            assert all(r["dags"] == args.campaigns and r["errors"] == 0 for r in runs), runs
            results[mode] = round(statistics.median(r["seconds"] for r in runs), 3)
    print(json.dumps({"benchmark": "parse", "campaigns": args.campaigns, "repeat": args.repeat,
                      "dagbag_s": results["dagbag"], "factory_s": results["factory"],
                      "per_campaign_ms": round(1000 * results["dagbag"] / args.campaigns, 1),
                      "goal_s": GOAL_S, "met": results["dagbag"] <= GOAL_S}, indent=2))


if __name__ == "__main__":
    main()
