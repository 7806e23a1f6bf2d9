"""The child side of Skein's dbt verifier (skein.dbt_build): executed by the isolated dbt
interpreter (.venv-dbt), never imported by Skein's own processes except for its doctests.

``python dbt_build_child.py RESULT.json REQUEST.json`` runs, in the current folder (a sandbox
copy of the project with the patched files in place): ``dbt parse``; ``dbt seed`` of the seeds
the selection reads; ``dbt run`` of the other ancestors of everything built (unchanged models
the fresh sandbox warehouse does not hold yet); and ``dbt build --select <models>+`` (the models,
their descendants and the tests on them). Python models and their descendants are excluded
(dbt-duckdb runs their Python in this process) and reported as not built.

The sandbox profile's connection is locked by the ``skein_sandbox_lock`` plugin defined here:
DuckDB refuses ``allowed_directories`` once external access is off, and dbt-duckdb's
``config_options`` apply at connect, where DuckDB refuses it before the database starts; so
the plugin runs three ``SET``s on the fresh connection, in the order that works: the copy's
seed folders allowed (dbt-duckdb loads seeds with ``read_csv``), external access off, the
configuration locked. A connection it could not lock is refused.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types

LOCK_MODULE = "skein_sandbox_lock"
MESSAGE_CHARS = 2000
RUN_RESULTS = "target/run_results.json"


def lock_statements(allowed: list[str]) -> list[str]:
    """The SETs that lock a fresh DuckDB connection, in the only order DuckDB accepts.

    >>> lock_statements(["/s/seeds/", "/s/o'q/"])  # doctest: +NORMALIZE_WHITESPACE
    ["SET allowed_directories = ['/s/seeds/', '/s/o''q/']",
     'SET enable_external_access = false', 'SET lock_configuration = true']
    """
    folders = ", ".join("'" + a.replace("'", "''") + "'" for a in allowed)
    return [f"SET allowed_directories = [{folders}]", "SET enable_external_access = false",
            "SET lock_configuration = true"]


def install_lock_plugin() -> None:
    """Register the plugin module dbt-duckdb imports by the name the profile gives."""
    from dbt.adapters.duckdb.plugins import BasePlugin

    class Plugin(BasePlugin):
        def initialize(self, plugin_config):
            self.allowed = [str(a) for a in plugin_config.get("allowed_directories") or []]

        def configure_connection(self, conn):
            for statement in lock_statements(self.allowed):
                conn.execute(statement)
            locked = conn.execute("SELECT current_setting('lock_configuration'), "
                                  "current_setting('enable_external_access')").fetchone()
            if locked != (True, False):  # never hand dbt an unlocked connection
                raise RuntimeError(f"sandbox connection not locked: {locked}")

    module = types.ModuleType(LOCK_MODULE)
    module.Plugin = Plugin
    sys.modules[LOCK_MODULE] = module


def common_args() -> list[str]:
    return ["--profiles-dir", ".", "--project-dir", ".", "--no-use-colors", "--quiet"]


def python_models(manifest: dict) -> dict[str, str]:
    """Python models (unique id -> path) and every node downstream of one.

    >>> m = {"nodes": {"model.p.a": {"language": "python", "original_file_path": "models/a.py"},
    ...                "model.p.b": {"language": "sql", "original_file_path": "models/b.sql"}},
    ...      "child_map": {"model.p.a": ["model.p.b"], "model.p.b": []}}
    >>> python_models(m)
    {'model.p.a': 'models/a.py', 'model.p.b': 'downstream of model.p.a'}
    """
    found: dict[str, str] = {}
    for uid, node in manifest.get("nodes", {}).items():
        if node.get("resource_type", "model") == "model" and node.get("language") == "python":
            found[uid] = node.get("original_file_path", "")
            stack = list(manifest.get("child_map", {}).get(uid, []))
            while stack:
                child = stack.pop()
                if child not in found:
                    found[child] = f"downstream of {uid}"
                    stack.extend(manifest.get("child_map", {}).get(child, []))
    return found


def steps(select: list[str], python_paths: list[str], seeds: bool) -> list[tuple[str, list[str]]]:
    """The dbt commands of a build, each named by its phase. The sandbox warehouse starts
    empty, so everything the build reads is made first: ``@m`` is m, its descendants and
    all their ancestors; seeds are loaded, the unchanged ancestors run (no tests). The build
    runs the tests whose parents all exist then (``buildable``).

    >>> [(p, a[:3]) for p, a in steps(["m"], [], True)]  # doctest: +NORMALIZE_WHITESPACE
    [('seed', ['seed', '--select', '@m']), ('upstream', ['run', '--select', '@m']),
     ('build', ['build', '--select', 'm+'])]
    >>> steps(["m"], ["models/p.py"], False)[0][1][-3:]
    ['--exclude', 'm+', 'path:models/p.py+']
    """
    around = " ".join(f"@{m}" for m in select)
    below = [f"{m}+" for m in select]
    excluded = [f"path:{p}+" for p in python_paths]
    plan = [("seed", ["seed", "--select", around, *common_args()]
             + (["--exclude", *excluded] if excluded else []))] if seeds else []
    plan.append(("upstream", ["run", "--select", around, *common_args(),
                              "--exclude", *below, *excluded]))
    plan.append(("build", ["build", "--select", " ".join(below), "--indirect-selection",
                           "buildable", *common_args()]
                 + (["--exclude", *excluded] if excluded else [])))
    return plan


def node_results(run_results: dict, manifest: dict, phase: str) -> list[dict]:
    """One row per node dbt ran: status, message, test failures, time, parents."""
    rows = []
    for result in run_results.get("results", []):
        uid = result.get("unique_id", "")
        node = manifest.get("nodes", {}).get(uid, {})
        rows.append({"unique_id": uid, "phase": phase, "status": str(result.get("status")),
                     "message": str(result.get("message") or "")[:MESSAGE_CHARS],
                     "failures": result.get("failures"),
                     "seconds": round(float(result.get("execution_time") or 0), 3),
                     "resource_type": node.get("resource_type", uid.split(".")[0]),
                     "name": node.get("name", uid), "path": node.get("original_file_path", ""),
                     "parents": list(node.get("depends_on", {}).get("nodes", []))})
    return rows


# The same as dbt_child.invoke, on purpose: a child runs as a lone script under `python -I`
# (no script folder, no Skein on sys.path), so it cannot import its sibling.
def invoke(runner, args: list[str]) -> tuple[bool, str]:
    try:
        outcome = runner.invoke(args)
        return outcome.success, (str(outcome.exception) if outcome.exception else "")
    except Exception as exc:  # dbt's own crash: reported, the parent decides
        return False, f"{type(exc).__name__}: {exc}"


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def main(result_path: str, request_path: str) -> int:
    from dbt.cli.main import dbtRunner

    request = read_json(request_path)
    install_lock_plugin()
    runner = dbtRunner()
    started = time.monotonic()
    ok, error = invoke(runner, ["parse", *common_args()])
    report: dict = {"parse": {"ok": ok, "error": error[-4000:]}, "nodes": [], "steps": {},
                    "not_built": {}, "timings": {"parse": round(time.monotonic() - started, 2)}}
    if ok:
        manifest = read_json("target/manifest.json")
        python = python_models(manifest)
        report["not_built"] = {uid: ("a Python model: dbt-duckdb would run its Python in the "
                                     "sandbox child" if why.endswith(".py")
                                     else f"{why}, a Python model") for uid, why in python.items()}
        paths = sorted(p for p in python.values() if p.endswith(".py"))
        for phase, args in steps(list(request.get("select") or []), paths,
                                 bool(request.get("seeds"))):
            started = time.monotonic()
            if os.path.exists(RUN_RESULTS):  # a step that stops early must not show the last
                os.remove(RUN_RESULTS)
            ok, error = invoke(runner, args)
            report["timings"][phase] = round(time.monotonic() - started, 2)
            report["steps"][phase] = {"ok": ok, "error": error[-4000:]}
            report["nodes"] += node_results(read_json(RUN_RESULTS), manifest, phase)
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
