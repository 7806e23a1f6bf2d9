"""The Python consumer code of tests/material.py, and what skein.python_refs finds in it.

``python tests/python_material.py`` prints docs/discovery.md's table ("Python consumers: what
is found"): files scanned, findings per kind, unresolved ones and column uses, per tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import material

# (package, folder inside it, glob): the trees issue 21 names.
TREES = (
    ("apache-airflow-providers-common-sql", "tests/system", "**/*.py"),
    ("apache-airflow-providers-sqlite", "tests/system", "**/*.py"),
    ("apache-airflow-providers-postgres", "tests/system", "**/*.py"),
    ("apache-airflow-providers-google", "tests/system/google/cloud/bigquery", "**/*.py"),
    ("pandas", "pandas/tests/io", "test_sql.py"),
    ("sqlframe", "tests", "**/*.py"),
    ("sqlmesh", "examples/sushi/models", "*.py"),
    ("ibis-framework", "ibis/backends/tests/tpc/h", "test_queries.py"),
)


def tree_files(package: str, folder: str, pattern: str) -> list[Path]:
    return sorted(p for p in (material.ensure(package) / folder).glob(pattern) if p.is_file())


def all_files() -> Iterator[tuple[str, Path]]:
    for package, folder, pattern in TREES:
        for path in tree_files(package, folder, pattern):
            yield package, path


def table_rows() -> list[str]:
    """One row per tree: files, findings by kind, unresolved, column uses, seconds."""
    import time

    from skein.python_refs import find_python_refs

    rows = ["| package (tree) | files | sql | table | template | unresolved | columns | errors | s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for package, folder, pattern in TREES:
        counts = dict.fromkeys(("files", "sql", "table", "template", "unresolved", "columns",
                                "errors"), 0)
        started = time.monotonic()
        for path in tree_files(package, folder, pattern):
            refs = find_python_refs(path.read_text(encoding="utf-8"))
            counts["files"] += 1
            counts["errors"] += refs.error is not None
            counts["columns"] += len(refs.columns)
            for finding in refs.findings:
                counts[finding.kind] += 1
                counts["unresolved"] += not finding.resolved
        took = time.monotonic() - started
        rows.append(f"| {package} ({folder}/{pattern}) | " +
                    " | ".join(str(v) for v in counts.values()) + f" | {took:.1f} |")
    return rows


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
    print("\n".join(table_rows()))
