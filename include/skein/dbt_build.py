"""dbt as the verifier: build a patched dbt project's affected models and their descendants
with dbt in the sandbox warehouse, and run the project's own tests on them.

``build_dbt_project(root, patched, select, inputs=...)`` copies the project (skein.dbt_sandbox:
no symlinks, no target/ or installed packages, the consumer's tree never written), writes the
patched files into the copy, puts stand-ins for uninstalled packages (skein.dbt_packages) and
a locked sandbox profile there, prepares a sandbox DuckDB file holding the input tables (a
DuckDB file the caller prepared, and/or Parquet files loaded here by Skein's own DuckDB), and
runs dbt_build_child.py in the isolated dbt interpreter: seeds, the unchanged ancestors, then
``dbt build --select <models>+``. The answer is a frozen ``DbtBuildResult``.

What refutes a patch: dbt cannot parse the patched project, or a node of the build phase (the
selected models, their descendants and their tests) ends in ``error`` or ``fail``. A node that
needs an uninstalled package, a Python model (not run in the sandbox) and what is downstream
of either are *not built*, with the reason, and refute nothing by themselves.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import duckdb

from skein.dbt_packages import install_stand_ins
from skein.dbt_sandbox import (DbtSandboxError, DbtSettings, build_profile, copy_project,
                               dbt_settings, project_config, project_profile_name, run_child,
                               target_schema)

BUILD_CHILD = Path(__file__).with_name("dbt_build_child.py")
SHOWN_CHARS = 300
MISSING_PACKAGE = "is not installed (packages.yml"
REFUTING = ("error", "fail", "runtime error")


@dataclass(frozen=True)
class DbtNodeResult:
    unique_id: str
    resource_type: str  # model, seed, test, snapshot
    name: str
    phase: str  # seed, upstream, build
    status: str  # dbt's: success, error, fail, pass, warn, skipped; or not_built
    message: str  # dbt's message, truncated to SHOWN_CHARS
    failures: int | None = None  # a test's failing rows
    seconds: float = 0.0


@dataclass(frozen=True)
class DbtBuildResult:
    root: str
    selected: tuple[str, ...]
    parsed: bool
    error: str | None  # why dbt could not parse the patched project
    nodes: tuple[DbtNodeResult, ...] = ()
    timings: tuple[tuple[str, float], ...] = ()

    def of_status(self, *statuses: str, phase: str | None = None) -> list[DbtNodeResult]:
        return [n for n in self.nodes if n.status in statuses and (phase in (None, n.phase))]

    def built_models(self) -> list[str]:
        return [n.name for n in self.of_status("success") if n.resource_type == "model"]

    def passed_tests(self) -> list[str]:
        return [n.name for n in self.of_status("pass") if n.resource_type == "test"]

    def failed_tests(self) -> list[str]:
        return [n.name for n in self.of_status("fail", "error") if n.resource_type == "test"]

    def not_built(self) -> list[DbtNodeResult]:
        return self.of_status("not_built")

    def refuting(self) -> list[DbtNodeResult]:
        """The nodes that refute the patch: errors and failed tests of the build phase."""
        return self.of_status(*REFUTING, phase="build")

    @property
    def refuted(self) -> bool:
        return not self.parsed or bool(self.refuting())

    def reason(self) -> str:
        """One line for the evidence: why the build refutes the patch, or that it held."""
        if not self.parsed:
            return f"dbt cannot parse the patched project: {self.error}"
        bad = self.refuting()
        if bad:
            return "; ".join(f"{n.resource_type} {n.name} {n.status}: {n.message}" for n in bad[:5])
        return (f"dbt build: {len(self.built_models())} models built, "
                f"{len(self.passed_tests())} tests passed, {len(self.not_built())} not built")


def new_failures(build: DbtBuildResult, baseline: DbtBuildResult) -> list[DbtNodeResult]:
    """The refuting nodes of ``build`` that did not already fail in ``baseline`` (the same
    selection, unpatched): what the patch broke, not what was broken before.

    >>> node = lambda s: DbtNodeResult("test.p.t", "test", "t", "build", s, "")
    >>> old = DbtBuildResult("/p", ("m",), True, None, (node("fail"),))
    >>> new = DbtBuildResult("/p", ("m",), True, None, (node("fail"),))
    >>> new_failures(new, old), len(new_failures(new, DbtBuildResult("/p", ("m",), True, None)))
    ([], 1)
    """
    before = {n.unique_id for n in baseline.refuting()} if baseline.parsed else set()
    return [n for n in build.refuting() if n.unique_id not in before]


def build_dbt_project(root: Path, patched: Mapping[str, str], select: Sequence[str], *,
                      inputs: Path | None = None, parquet: Mapping[str, Path] | None = None,
                      settings: DbtSettings | None = None) -> DbtBuildResult:
    """Build ``select`` (model names) and their descendants of the project at ``root`` with
    ``patched`` (relative path -> text) in place, against a sandbox warehouse holding
    ``inputs`` (a DuckDB file, copied) and ``parquet`` ("schema.table" -> file)."""
    if not select:
        raise DbtSandboxError("nothing selected to build")
    root = Path(root).resolve()
    with tempfile.TemporaryDirectory(prefix="skein-dbt-build-") as tmp:
        work = Path(tmp)
        copy = work / "project"
        copy_project(root, copy)  # its failures are DbtSandboxErrors
        write_patched(copy, patched)
        (work / "home").mkdir()
        database = work / "sandbox.duckdb"
        prepare_warehouse(database, inputs, parquet or {})
        profile = project_profile_name(copy)
        install_stand_ins(copy, str(project_config(copy).get("packages-install-path") or "dbt_packages"))
        (copy / "profiles.yml").write_text(
            build_profile(profile, database, target_schema(copy, profile), seed_folders(copy)),
            encoding="utf-8")
        seeds = any(p.suffix == ".csv" for f in seed_folders(copy) for p in Path(f).rglob("*"))
        (work / "request.json").write_text(json.dumps({"select": list(select), "seeds": seeds}))
        run_child(settings or dbt_settings(), copy, work / "home", work / "result.json",
                  script=BUILD_CHILD, extra=(str(work / "request.json"),))
        report = json.loads((work / "result.json").read_text(encoding="utf-8"))
    return build_result(str(root), tuple(select), report)


def safe_relative(path: str) -> PurePosixPath:
    """A patched file's path, refused when it would leave the copy.

    >>> safe_relative("models/a.sql")
    PurePosixPath('models/a.sql')
    >>> safe_relative("../x.sql")
    Traceback (most recent call last):
    skein.dbt_sandbox.DbtSandboxError: ../x.sql: a patched file must lie inside the project
    """
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise DbtSandboxError(f"{path}: a patched file must lie inside the project")
    return relative


def write_patched(copy: Path, patched: Mapping[str, str]) -> None:
    for path, text in patched.items():
        target = copy / safe_relative(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def seed_folders(copy: Path) -> list[str]:
    """The copy's seed folders (``seed-paths``), as DuckDB's ``allowed_directories`` wants
    them: absolute, with a trailing slash, inside the copy only."""
    paths = project_config(copy).get("seed-paths") or ["seeds"]
    folders = []
    for path in paths if isinstance(paths, list) else [paths]:
        folder = (copy / str(path)).resolve()
        if folder.is_relative_to(copy.resolve()):  # a seed path leaving the copy gets no access
            folders.append(str(folder) + "/")
    return folders


def prepare_warehouse(database: Path, inputs: Path | None, parquet: Mapping[str, Path]) -> None:
    """The sandbox DuckDB file: a copy of ``inputs``, plus each Parquet file as a table.
    Done by Skein's own DuckDB, before the child starts: the child's connection is locked."""
    if inputs is not None:
        shutil.copyfile(inputs, database)
    with duckdb.connect(str(database)) as con:
        for relation, path in parquet.items():
            schema, _, table = relation.rpartition(".")
            schema = schema or "main"
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            con.execute(f'CREATE OR REPLACE TABLE "{schema}"."{table}" AS '
                        "SELECT * FROM read_parquet(?)", [str(path)])


def shown(message: str) -> str:
    """dbt's message on one line, truncated (escaping is the renderer's: views escape all text).

    >>> shown("Runtime Error\\n  Binder Error: x" + "y" * 400)[-12:]
    'yyyyyyyyyy …'
    """
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 2] + " …"


def build_result(root: str, select: tuple[str, ...], report: dict) -> DbtBuildResult:
    parse = report.get("parse") or {}
    timings = tuple((k, float(v)) for k, v in (report.get("timings") or {}).items())
    if not parse.get("ok"):
        return DbtBuildResult(root=root, selected=select, parsed=False,
                              error=shown(parse.get("error") or "no parse result"), timings=timings)
    return DbtBuildResult(root=root, selected=select, parsed=True, error=None,
                          nodes=tuple(classify(report)), timings=timings)


def classify(report: dict) -> list[DbtNodeResult]:
    """Nodes as dbt reported them, except: an error caused by an uninstalled package, and what
    was skipped below one, is ``not_built`` with that reason; Python models are listed as
    ``not_built`` too."""
    missing: dict[str, str] = {}
    rows = report.get("nodes") or []
    for row in rows:
        if row["status"] == "error" and MISSING_PACKAGE in row["message"]:
            missing[row["unique_id"]] = shown(row["message"])
    for row in rows:  # skipped nodes come after their parents in dbt's order
        if row["status"] == "skipped":
            cause = next((p for p in row["parents"] if p in missing), None)
            if cause:
                missing[row["unique_id"]] = f"downstream of {cause}, not built"
    results = []
    for row in rows:
        status = "not_built" if row["unique_id"] in missing else row["status"]
        message = missing.get(row["unique_id"]) or shown(row["message"])
        results.append(DbtNodeResult(unique_id=row["unique_id"], resource_type=row["resource_type"],
                                     name=row["name"], phase=row["phase"], status=status,
                                     message=message, failures=row.get("failures"),
                                     seconds=row.get("seconds") or 0.0))
    for uid, why in sorted((report.get("not_built") or {}).items()):
        results.append(DbtNodeResult(unique_id=uid, resource_type=uid.split(".")[0],
                                     name=uid.rsplit(".", 1)[-1], phase="build",
                                     status="not_built", message=shown(why)))
    return results
