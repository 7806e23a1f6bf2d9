"""The public dbt projects of tests/material.py, as a dbt user would have them on disk.

sushi_dbt and the three ade-bench projects are used where they were unpacked (the tests
check that nothing writes there). The MetricFlow tutorial is assembled as ``mf tutorial``
does (dbt_metricflow/cli/tutorial.py: the project, its sample models under
``models/sample_model`` and seeds under ``seeds/sample_seeds``); sbdk's template gets its
``{project_name}`` placeholders filled, as ``sbdk init`` does, in a copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import material

PROJECTS = ("sushi", "airbnb", "f1", "analytics_engineering", "metricflow", "sbdk")


def project_root(name: str, scratch: Path) -> Path:
    """The project ``name``; ``scratch`` holds the assembled ones."""
    if name == "sushi":
        return material.ensure("sqlmesh") / "examples" / "sushi_dbt"
    if name in ("airbnb", "f1", "analytics_engineering"):
        return material.ensure("ade-bench") / "shared" / "projects" / "dbt" / name
    if name == "metricflow":
        return _metricflow(scratch / "mf_tutorial")
    if name == "sbdk":
        return _sbdk(scratch / "sbdk_demo")
    raise KeyError(name)


def _metricflow(dest: Path) -> Path:
    if dest.exists():
        return dest
    cli = material.ensure("dbt-metricflow") / "dbt_metricflow" / "cli"
    shutil.copytree(cli / "mf_tutorial_project", dest)
    shutil.copytree(cli / "sample_dbt_models" / "sample_models", dest / "models" / "sample_model")
    shutil.copytree(cli / "sample_dbt_models" / "seeds", dest / "seeds" / "sample_seeds")
    profiles = dest / "profiles.yml"
    profiles.write_text(profiles.read_text().replace("$db_file_path",
                                                     f"'{dest / 'mf_tutorial.duckdb'}'"))
    return dest


def _sbdk(dest: Path) -> Path:
    if dest.exists():
        return dest
    shutil.copytree(material.ensure("sbdk-dev") / "sbdk" / "templates" / "dbt", dest)
    for path in dest.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if "{project_name}" in text:
                path.write_text(text.replace("{project_name}", "sbdk_demo"), encoding="utf-8")
    return dest


def table_rows(scratch: Path) -> list[str]:
    """docs/discovery.md's table, measured: ``python tests/dbt_material.py`` prints it."""
    import time

    from skein.dbt_graph import read_dbt_graph
    from skein.dbt_schemas import infer_columns

    rows = []
    for name in PROJECTS:
        started = time.monotonic()
        graph = read_dbt_graph(project_root(name, scratch))
        total = time.monotonic() - started
        inferred = infer_columns(graph)
        models = graph.models()
        known = [m for m in models if inferred[m.unique_id].columns is not None]
        unknown = sorted({inferred[m.unique_id].reason.split(":")[0] for m in models
                          if inferred[m.unique_id].columns is None})
        timings = dict(graph.timings)
        rows.append(f"| {name} | {graph.parser} | {len(models)} | {len(graph.compiled_models())} "
                    f"| {len(known)} | {'; '.join(unknown) or '-'} "
                    f"| {timings.get('parse', 0):.1f} s | {total:.1f} s |")
    return rows


if __name__ == "__main__":
    import os
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
    with tempfile.TemporaryDirectory() as tmp:
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        print("\n".join(table_rows(Path(tmp))))
        print(f"load average after: {os.getloadavg()[0]:.1f}")
