"""The dbt verdict of a dry run: beside parity, build the patched dbt models and their
descendants with dbt (skein.dbt_build) on the dry run's own data, and run the project's tests.

One seam, ``with_dbt_builds``, called once by ``simulate`` after the parity runs: per dbt
project with a patched model whose dry run passed, two sandboxed builds of the same
selection: the project as it was on the old world's inputs (the baseline), and the patched
project on the new world's inputs (the target instead of the source). A node that errors or
fails in the patched build and did not in the baseline refutes the patch: every patched
model of that project then fails its simulation, naming the node and dbt's message, and
goes back to the LLM agent like any refuted patch. Failures both builds share (a
relationships test broken by sampling, a package that is not installed) refute nothing.
The verdict is recorded as ``SimulationResult.dbt_build`` and shown in the evidence.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path

import duckdb
from sqlglot import exp

from skein.catalog import Consumer
from skein.dbt_build import DbtBuildResult, build_dbt_project, new_failures
from skein.dbt_sandbox import DbtSandboxError
from skein.errors import first_line
from skein.rewrite.request import Patch
from skein.simulation.sandbox import Sandbox, SandboxError

NODES_SHOWN = 20


def with_dbt_builds(consumers: list[Consumer], results: dict, simulations: dict,
                    worlds: tuple[Sandbox, Sandbox], inputs: tuple[list[str], list[str]]) -> dict:
    """``simulations`` with the dbt verdict of each passed, patched dbt model added.
    ``worlds`` and ``inputs``: the old and new sandboxes and the datasets each holds."""
    out = dict(simulations)
    for root, members in dbt_projects(consumers, results, simulations).items():
        verdict = verify_project(root, members, results, worlds, inputs)
        for consumer in members:
            out[consumer.id] = apply_verdict(out[consumer.id], verdict)
    return out


def dbt_projects(consumers: list[Consumer], results: dict, simulations: dict) -> dict[Path, list]:
    """Patched dbt models whose dry run passed, by project root."""
    projects: dict[Path, list[Consumer]] = defaultdict(list)
    for consumer in consumers:
        simulation = simulations.get(consumer.id)
        if (consumer.kind == "dbt_model" and consumer.dbt_project_root and consumer.file
                and isinstance(results.get(consumer.id), Patch)
                and simulation is not None and simulation.status == "pass"):
            projects[Path(consumer.dbt_project_root)].append(consumer)
    return dict(projects)


def verify_project(root: Path, members: list[Consumer], results: dict,
                   worlds: tuple[Sandbox, Sandbox], inputs: tuple[list[str], list[str]]) -> dict:
    """The dbt verdict for one project, as recorded: status passed | refuted | not run."""
    started = time.perf_counter()
    patched = {c.file.resolve().relative_to(root.resolve()).as_posix(): results[c.id].text
               for c in members}
    select = sorted({c.file.stem for c in members})
    try:
        with tempfile.TemporaryDirectory(prefix="skein-dbt-worlds-") as tmp:
            old_db, new_db = Path(tmp) / "old.duckdb", Path(tmp) / "new.duckdb"
            export_world(worlds[0], inputs[0], old_db)
            export_world(worlds[1], inputs[1], new_db)
            baseline = build_dbt_project(root, {}, select, inputs=old_db)
            build = build_dbt_project(root, patched, select, inputs=new_db)
    except (DbtSandboxError, SandboxError, duckdb.Error, OSError, ValueError) as exc:
        return {"status": "not run", "reason": f"dbt build could not run: {first_line(exc)}",
                "selected": select, "seconds": round(time.perf_counter() - started, 3)}
    return verdict_record(build, baseline, round(time.perf_counter() - started, 3))


def verdict_record(build: DbtBuildResult, baseline: DbtBuildResult, seconds: float) -> dict:
    """What the simulation record keeps of the two builds (dbt's messages already truncated)."""
    refuting = new_failures(build, baseline)
    if not build.parsed:
        reason = build.reason()
    elif refuting:
        reason = "; ".join(f"{n.resource_type} {n.name} {n.status}: {n.message}" for n in refuting[:3])
    else:
        reason = build.reason()
    nodes = [{"name": n.name, "type": n.resource_type, "phase": n.phase, "status": n.status,
              "message": n.message, "failures": n.failures} for n in build.nodes
             if n.phase == "build"]
    return {"status": "refuted" if (not build.parsed or refuting) else "passed", "reason": reason,
            "selected": list(build.selected), "built": build.built_models(),
            "tests_passed": len(build.passed_tests()), "tests_failed": build.failed_tests(),
            "refuting": [n.name for n in refuting],
            "baseline_failures": [n.name for n in baseline.refuting()],
            "nodes": nodes[:NODES_SHOWN], "nodes_total": len(nodes),
            "timings": dict(build.timings), "seconds": seconds}


def apply_verdict(simulation, verdict: dict):
    """The simulation with the verdict recorded; a refuted build fails it."""
    update: dict = {"dbt_build": verdict}
    if verdict["status"] == "refuted":
        update |= {"status": "fail", "reason": f"dbt build refuted the patch: {verdict['reason']}"}
    return simulation.model_copy(update=update)


def export_world(world: Sandbox, names: list[str], database: Path) -> None:
    """Copy the world's tables ``names`` into a DuckDB file (dbt's sandbox warehouse), under
    their schema and table names: dbt sources name them so."""
    with duckdb.connect(str(database)) as con:
        for name in names:
            try:
                data = world.table(name)
            except (SandboxError, duckdb.Error):
                continue  # not in this world (the warehouse lacks it): dbt will say what fails
            table = exp.to_table(name)
            schema = table.db or "main"
            quoted_schema = exp.to_identifier(schema, quoted=True)
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted_schema.sql('duckdb')}")
            target = exp.table_(exp.to_identifier(table.name, quoted=True),
                                db=quoted_schema).sql("duckdb")
            con.register("world_data", data)
            con.execute(f"CREATE TABLE {target} AS SELECT * FROM world_data")
            con.unregister("world_data")
