"""Run dbt-core on a consumer's dbt project without trusting it.

dbt lives in its own environment (``.venv-dbt``, from requirements-dbt.lock; the interpreter
is ``$SKEIN_DBT_PYTHON``, else the repository's ``.venv-dbt/bin/python``): installed next to
Airflow it would downgrade protobuf, python-dateutil and others. And dbt executes the
project's macros (``run_query`` runs SQL on the profile's warehouse), so it runs only:

- in a child process with a scrubbed environment: an allow-list (PATH, locale, a temporary
  HOME), so no ``AIRFLOW__*``, ``SKEIN_STORE_URL``, database URL or cloud credential reaches
  ``env_var()``;
- on a copy of the project in a temporary folder (the consumer's files are never written),
  without its symlinks (which could lead anywhere) and without ``target/`` or installed
  packages;
- with a generated profiles.yml: DuckDB on a sandbox file in that folder, external access
  off and locked (``read_csv('/etc/…')`` from a macro fails), no extension downloads;
- under a timeout and a memory limit (RLIMIT_AS), killed with its process group.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from skein.errors import SkeinError, SpecError, first_line
from skein.yamlspan import check_expansion

REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD_SCRIPT = Path(__file__).with_name("dbt_child.py")
# Folders of a project that dbt writes or installs into, never worth copying.
NOT_COPIED = {"target", "dbt_packages", "dbt_modules", "logs", ".git", ".venv", "__pycache__"}
# Warehouse files a local build left in the project: data, not needed to parse, maybe large.
NOT_COPIED_SUFFIXES = (".duckdb", ".duckdb.wal", ".db")
# Variables the child may inherit: what a process needs to start, nothing that can hold a secret.
INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


class DbtSandboxError(SkeinError):
    """dbt could not be run on a project (no interpreter, timeout, crash)."""


@dataclass(frozen=True)
class DbtSettings:
    python: Path
    timeout_s: float = 300.0
    memory_bytes: int = 3 * 1024**3  # address space: dbt plus DuckDB's buffers


def dbt_settings() -> DbtSettings:
    """The dbt interpreter and limits, from ``SKEIN_DBT_PYTHON``, ``SKEIN_DBT_TIMEOUT_S``
    and ``SKEIN_DBT_MEMORY_MB``.

    >>> os.environ["SKEIN_DBT_PYTHON"] = "/opt/dbt/bin/python"
    >>> dbt_settings().python
    PosixPath('/opt/dbt/bin/python')
    >>> del os.environ["SKEIN_DBT_PYTHON"]
    >>> dbt_settings().python == REPO_ROOT / ".venv-dbt" / "bin" / "python"
    True
    """
    python = os.environ.get("SKEIN_DBT_PYTHON") or str(REPO_ROOT / ".venv-dbt" / "bin" / "python")
    return DbtSettings(python=Path(python),
                       timeout_s=float(os.environ.get("SKEIN_DBT_TIMEOUT_S") or 300),
                       memory_bytes=int(os.environ.get("SKEIN_DBT_MEMORY_MB") or 3072) * 1024**2)


def scrubbed_environment(home: Path, parent: dict[str, str] | None = None) -> dict[str, str]:
    """The child's whole environment: the allow-listed variables and dbt's own switches.

    >>> env = scrubbed_environment(Path("/tmp/h"), {"PATH": "/bin", "SKEIN_STORE_URL": "x",
    ...                                              "AIRFLOW__CORE__FERNET_KEY": "k"})
    >>> sorted(env)  # doctest: +NORMALIZE_WHITESPACE
    ['DBT_SEND_ANONYMOUS_USAGE_STATS', 'DBT_VERSION_CHECK', 'HOME', 'PATH',
     'PYTHONDONTWRITEBYTECODE']
    """
    parent = dict(os.environ) if parent is None else parent
    env = {name: parent[name] for name in INHERITED if name in parent}
    env.update(HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="false", DBT_VERSION_CHECK="false",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def copy_project(source: Path, dest: Path) -> None:
    """Copy a project's files into ``dest``, leaving out symlinks and dbt's own folders.

    >>> import tempfile
    >>> src, dst = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp()) / "copy"
    >>> (src / "models").mkdir(); _ = (src / "models" / "a.sql").write_text("select 1")
    >>> os.symlink("/etc/passwd", src / "models" / "b.sql"); (src / "target").mkdir()
    >>> copy_project(src, dst)
    >>> sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*"))
    ['models', 'models/a.sql']
    """
    def ignored(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        return {n for n in names if (here / n).is_symlink()
                or (n in NOT_COPIED and (here / n).is_dir()) or n.endswith(NOT_COPIED_SUFFIXES)}

    try:
        shutil.copytree(source, dest, ignore=ignored, symlinks=True)
    except (OSError, shutil.Error) as exc:
        raise DbtSandboxError(f"cannot copy the project into the sandbox: {first_line(exc)}") from None


def project_config(project: Path) -> dict:
    """dbt_project.yml as a mapping, or a one-line error naming the file (and line).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()); _ = (root / "dbt_project.yml").write_text("name: [x\\n")
    >>> project_config(root)
    Traceback (most recent call last):
    skein.dbt_sandbox.DbtSandboxError: dbt_project.yml line 2: not valid YAML (while parsing a flow sequence)
    """
    path = project / "dbt_project.yml"
    try:
        text = path.read_text(encoding="utf-8")
        check_expansion(text, path.name)  # an alias bomb is refused before PyYAML builds it
        config = yaml.safe_load(text) or {}
    except SpecError as exc:
        raise DbtSandboxError(f"{path.name} line {exc.line}: {exc.message}") from None
    except OSError as exc:
        raise DbtSandboxError(f"{path.name}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise DbtSandboxError(f"{path.name}{where}: not valid YAML ({getattr(exc, 'context', None) or exc})") from None
    if not isinstance(config, dict):
        raise DbtSandboxError(f"{path.name}: not a mapping of settings")
    return config


def project_profile_name(project: Path) -> str:
    """The ``profile:`` of dbt_project.yml (dbt defaults it to the project's name)."""
    config = project_config(project)
    return str(config.get("profile") or config.get("name") or "default")


def target_schema(project: Path, profile: str) -> str:
    """The schema the project's own profiles.yml gives its default target, else ``main``,
    so relations in the graph are named as the consumer's builds name them."""
    path = project / "profiles.yml"
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else "{}"
        check_expansion(text, path.name)
        profiles = yaml.safe_load(text)
        entry = (profiles or {}).get(profile) or {}
        output = (entry.get("outputs") or {}).get(entry.get("target", "dev")) or {}
        schema = output.get("schema")
    except (yaml.YAMLError, AttributeError, TypeError, SpecError, UnicodeDecodeError):
        schema = None  # an unreadable profile only loses the schema name
    return str(schema) if isinstance(schema, str) and "{" not in schema else "main"


def sandbox_profile(profile: str, database: Path, schema: str) -> str:
    """profiles.yml text for the sandbox: DuckDB with external access off and locked.

    >>> text = sandbox_profile("shop", Path("/s/sandbox.duckdb"), "main")
    >>> prof = yaml.safe_load(text)["shop"]["outputs"]["sandbox"]
    >>> prof["path"], prof["config_options"]["enable_external_access"]
    ('/s/sandbox.duckdb', False)
    """
    output = {"type": "duckdb", "path": str(database), "schema": schema, "threads": 1,
              "config_options": {"enable_external_access": False,
                                 "autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False,
                                 "lock_configuration": True}}
    return yaml.safe_dump({profile: {"target": "sandbox", "outputs": {"sandbox": output}}},
                          sort_keys=False)


def build_profile(profile: str, database: Path, schema: str, allowed: list[str]) -> str:
    """profiles.yml text for a sandbox build: as ``sandbox_profile``, but the lock comes from
    dbt_build_child's plugin, which first allows the seed folders (DuckDB refuses that once
    external access is off, and ``config_options`` apply too early to order them).

    >>> prof = yaml.safe_load(build_profile("shop", Path("/s/db"), "main", ["/s/p/seeds/"]))
    >>> out = prof["shop"]["outputs"]["sandbox"]
    >>> out["plugins"][0]["config"]["allowed_directories"], "lock_configuration" in out["config_options"]
    (['/s/p/seeds/'], False)
    """
    output = {"type": "duckdb", "path": str(database), "schema": schema, "threads": 1,
              "config_options": {"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False, "memory_limit": "1GB"},
              "plugins": [{"module": "skein_sandbox_lock",
                           "config": {"allowed_directories": list(allowed)}}]}
    return yaml.safe_dump({profile: {"target": "sandbox", "outputs": {"sandbox": output}}},
                          sort_keys=False)


def limit_child(memory_bytes: int):
    """preexec_fn for the child: its address space and no core files."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_child(settings: DbtSettings, folder: Path, home: Path, result: Path,
              script: Path = CHILD_SCRIPT, extra: tuple[str, ...] = ()) -> str:
    """Run ``script`` (dbt_child.py) in ``folder``; its output (stdout and stderr, tail) for
    error reports."""
    if not settings.python.is_file():
        raise DbtSandboxError(f"no dbt interpreter at {settings.python} (make setup creates "
                              ".venv-dbt; SKEIN_DBT_PYTHON names another)")
    process = subprocess.Popen(
        [str(settings.python), "-I", str(script), str(result), *extra], cwd=folder,
        env=scrubbed_environment(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=limit_child(settings.memory_bytes))
    try:
        output, _ = process.communicate(timeout=settings.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise DbtSandboxError(f"dbt did not finish within {settings.timeout_s:g} s "
                              "(SKEIN_DBT_TIMEOUT_S)") from None
    if process.returncode != 0 or not result.is_file():
        raise DbtSandboxError(f"dbt child exited {process.returncode}: "
                              f"{output.strip()[-1000:] or 'no output'}")
    return output[-4000:]
