"""Test material nobody here wrote: public dbt projects and Python data code that ship inside
PyPI distributions, downloaded at test time (pinned version and sha256), never committed.

``ensure(name)`` returns the unpacked distribution, downloading it once into a cache outside
the repository (``$SKEIN_MATERIAL_CACHE``, default ``~/.cache/skein-material``). ``make
material`` (which ``make test`` runs first) prepares every package, so CI needs nothing by
hand. The download is pip's (``pip download --no-deps``), as a user would fetch a package; the
archive is checked against its pinned sha256 before anything is unpacked, and unpacking refuses
members that would land outside the cache (tarfile's ``data`` filter; the zip check below).

>>> PACKAGES["sqlmesh"].archive_kind, PACKAGES["pandas"].archive_kind
('sdist', 'wheel')
>>> sorted(PACKAGES) == sorted(set(PACKAGES))
True
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    archive_kind: str  # "sdist" or "wheel"
    sha256: str
    # Paths inside the unpacked distribution that the tests use: checked after unpacking, so a
    # re-released archive with another layout fails here and not deep inside a test.
    holds: tuple[str, ...]

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.version}"


PACKAGES: dict[str, Package] = {p.name: p for p in (
    # dbt projects (issue 19)
    Package("sqlmesh", "0.236.4", "sdist",
            "f018b5ca04ee30a9db4a7ab9413c0afdfac0332bf45a110d8a0a0fa22f93e691",
            ("examples/sushi_dbt/dbt_project.yml", "examples/sushi/models/orders.py")),
    Package("ade-bench", "1.0.0rc1", "sdist",
            "c3e3c0df6a0eb8734bab56d11c0bcac780c7965a9ead1cabe91f98bd2bdfecc7",
            ("shared/projects/dbt/airbnb/dbt_project.yml", "shared/projects/dbt/f1/dbt_project.yml",
             "shared/projects/dbt/analytics_engineering/dbt_project.yml",
             "tasks/airbnb003/seeds/solution__src_listings.csv")),
    Package("dbt-metricflow", "0.15.0", "wheel",
            "470d5503530734b482675945d8d62a06f9f4797fa8cbd477be9e65e708248612",
            ("dbt_metricflow/cli/mf_tutorial_project/dbt_project.yml",
             "dbt_metricflow/cli/sample_dbt_models/sources.yml")),
    Package("sbdk-dev", "1.1.2", "wheel",
            "b664c5f87642142979c2f6a37e59f1063ef5eaf72ade0cb94a17535a0e2a5178",
            ("sbdk/templates/dbt/dbt_project.yml", "sbdk/templates/dbt/models/_sources.yml")),
    # Python consumers (issue 21)
    Package("apache-airflow-providers-common-sql", "2.4.0", "sdist",
            "363f89dab28bdb00e9090a50476a71795b8237adb0b1768c9490b805b1868e0d",
            ("tests/system/common/sql",)),
    Package("apache-airflow-providers-sqlite", "4.3.4", "sdist",
            "fd0a10b80431d545fd4f7073744e03aaaf3ebda88dbb6eb4b40f21137c0e6e24",
            ("tests/system/sqlite/create_table.sql",)),
    Package("apache-airflow-providers-postgres", "7.1.1", "sdist",
            "ebea35773fdfd97fa404632b3c35ceb846082a6d94ffdf710fcd448b41a58990",
            ("tests/system/postgres/example_postgres.py",)),
    Package("apache-airflow-providers-google", "22.8.0", "sdist",
            "654006dc73478b36f9e4bda0f00e45ba4b864f68da66653fbc77a9ece460a79d",
            ("tests/system/google/cloud/bigquery",)),
    Package("ibis-framework", "12.0.0", "wheel",
            "0bbd790f268da9cb87926d5eaad2b827a573927113c4ed3be5095efa89b9e512",
            ("ibis/backends/tests/tpc/h/test_queries.py",)),
    Package("pandas", "3.1.1", "wheel",
            "4f1602f614bb83f443381dbcbb94c4ac764b2e50c8d6c965614c5cd83e328c47",
            ("pandas/tests/io/test_sql.py",)),
    Package("sqlframe", "4.10.0", "sdist",
            "081446711d3c784d0492f676afa1c2974a3f1dabf9a72410087ab10c78080153",
            ("tests/common_fixtures.py",)),
)}


class MaterialError(Exception):
    """A package could not be downloaded, verified or unpacked."""


def cache_root() -> Path:
    return Path(os.environ.get("SKEIN_MATERIAL_CACHE")
                or Path.home() / ".cache" / "skein-material")


def ensure(name: str) -> Path:
    """The unpacked distribution ``name`` (its top folder), downloading it if needed."""
    package = PACKAGES[name]
    root = cache_root()
    target = root / package.folder
    if _complete(target, package):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):  # pytest-xdist workers may ask at once
        if not _complete(target, package):
            _fetch(package, target)
    return target


def _complete(target: Path, package: Package) -> bool:
    return (target / ".verified").is_file() and all((target / p).exists() for p in package.holds)


@contextmanager
def _locked(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch(package: Package, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        archive = _download(package, Path(tmp) / "dl")
        verify(archive, package.sha256)
        unpacked = Path(tmp) / "unpacked"
        _unpack(archive, unpacked)
        top = _top_folder(unpacked, package)
        missing = [p for p in package.holds if not (top / p).exists()]
        if missing:
            raise MaterialError(f"{package.folder}: the archive lacks {', '.join(missing)}")
        (top / ".verified").write_text(package.sha256 + "\n")
        if target.exists():
            shutil.rmtree(target)
        top.rename(target)


def _download(package: Package, into: Path) -> Path:
    spec = f"{package.name}=={package.version}"
    binary = ["--no-binary", ":all:"] if package.archive_kind == "sdist" else ["--only-binary", ":all:"]
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *binary,
                           "--dest", str(into), spec], capture_output=True, text=True)
    files = list(into.glob("*")) if into.is_dir() else []
    if done.returncode != 0 or len(files) != 1:
        raise MaterialError(f"pip download {spec} failed ({done.returncode}): "
                            f"{done.stderr.strip()[-2000:]}")
    return files[0]


def verify(archive: Path, sha256: str) -> None:
    """Refuse an archive whose content is not the pinned one.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "a.tar.gz"
    >>> _ = f.write_bytes(b"x")
    >>> verify(f, hashlib.sha256(b"x").hexdigest())
    >>> try:
    ...     verify(f, "0" * 64)
    ... except MaterialError as exc:
    ...     print(exc)
    a.tar.gz: sha256 2d711642b726 is not the pinned 000000000000
    """
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != sha256:
        raise MaterialError(f"{archive.name}: sha256 {digest[:12]} is not the pinned {sha256[:12]}")


def _unpack(archive: Path, into: Path) -> None:
    into.mkdir()
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                # zipfile strips ".." and leading "/" itself; refuse them anyway, loudly.
                if member.startswith("/") or ".." in Path(member).parts:
                    raise MaterialError(f"{archive.name}: member {member!r} escapes the folder")
            zf.extractall(into)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(into, filter="data")


def _top_folder(unpacked: Path, package: Package) -> Path:
    """An sdist unpacks into one ``name-version`` folder; a wheel into its packages."""
    children = [c for c in unpacked.iterdir()]
    if package.archive_kind == "sdist" and len(children) == 1 and children[0].is_dir():
        return children[0]
    return unpacked


def main(argv: list[str]) -> int:
    names = argv or sorted(PACKAGES)
    for name in names:
        if name not in PACKAGES:
            print(f"material: unknown package {name!r} (known: {', '.join(sorted(PACKAGES))})",
                  file=sys.stderr)
            return 2
        print(f"material: {name} -> {ensure(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
