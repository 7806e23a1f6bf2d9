"""The child side of Skein's dbt runs: executed by the isolated dbt interpreter (.venv-dbt),
never imported by Skein's own processes (dbt is not installed there).

``python dbt_child.py RESULT.json`` runs ``dbt parse`` and then ``dbt compile`` (models,
analyses and snapshots) in the current folder, a sandbox copy of the project, with dbt's own
``dbtRunner``: one interpreter start for both commands (dbt takes ~2 s to import). The parent
(skein.dbt_sandbox) prepared the folder, the profile and a scrubbed environment; it reads
``target/manifest.json`` and ``target/run_results.json`` and the small RESULT.json written
here: per command whether it succeeded, its error, and how long it took.

>>> compile_args([])[:2]
['compile', '--select']
"""

from __future__ import annotations

import json
import re
import sys
import time


FAILED_NODE = re.compile(r"Error in (?:model|analysis|snapshot|seed) \S+ \(([^)\n]+)\)")
MAX_COMPILE_ATTEMPTS = 300


def common_args() -> list[str]:
    return ["--profiles-dir", ".", "--project-dir", ".", "--no-use-colors", "--quiet"]


def compile_args(excluded: list[str]) -> list[str]:
    """``dbt compile`` of what has compiled SQL worth reading, without the files that failed.
    Tests are left out (their SQL is dbt's, and they double the time).

    >>> compile_args(["models/a.sql"])[-2:]
    ['--exclude', 'path:models/a.sql']
    """
    args = ["compile", "--select", "resource_type:model resource_type:analysis "
            "resource_type:snapshot", *common_args()]
    return args + (["--exclude", *(f"path:{p}" for p in excluded)] if excluded else [])


def failed_path(error: str) -> str | None:
    """The file of the node dbt's compile stopped at (dbt compile stops at its first error).

    >>> failed_path("Runtime Error\\n  Compilation Error in model a (models/a.sql)\\n  boom")
    'models/a.sql'
    """
    found = FAILED_NODE.search(error)
    return found.group(1) if found else None


def invoke(runner, args: list[str]) -> tuple[bool, str]:
    try:
        outcome = runner.invoke(args)
        return outcome.success, (str(outcome.exception) if outcome.exception else "")
    except Exception as exc:  # dbt's own crash: reported, the parent decides
        return False, f"{type(exc).__name__}: {exc}"


def compile_each(runner) -> dict:
    """Compile everything; dbt stops at the first node that fails, so that node's file is
    excluded and compile runs again (a partial parse: ~1 s), until the rest compiles."""
    failed: dict[str, str] = {}
    ok, error = False, ""
    for _ in range(MAX_COMPILE_ATTEMPTS):
        ok, error = invoke(runner, compile_args(sorted(failed)))
        path = None if ok else failed_path(error)
        if ok or path is None or path in failed:
            break
        failed[path] = error[-2000:]
    return {"ok": ok, "error": "" if ok else error[-4000:], "failed": failed}


def main(result_path: str) -> int:
    # Imported here: Skein's test run imports this module for its doctest, without dbt.
    from dbt.cli.main import dbtRunner

    runner = dbtRunner()
    started = time.monotonic()
    ok, error = invoke(runner, ["parse", *common_args()])
    report: dict[str, dict] = {"parse": {"ok": ok, "error": error[-4000:],
                                         "seconds": round(time.monotonic() - started, 2)}}
    if ok:
        started = time.monotonic()
        report["compile"] = compile_each(runner)
        report["compile"]["seconds"] = round(time.monotonic() - started, 2)
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
