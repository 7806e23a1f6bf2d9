"""The catalog: datasets (from the warehouse) and consumers (from repos and views).

Building it is two steps, like astronomer-cosmos parsing a dbt project before
rendering anything: ``scan_consumers`` finds consumer texts (cheap, one process),
``analyze_consumers`` resolves their column lineage (parsing is the cost, so it
runs in worker processes for large fleets).
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import multiprocessing
import os
import signal
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from skein.dbt import (DbtProject, DbtProjectError, DbtRenderError, load_dbt_project,
                       substitute_relations)
from skein.errors import DiscoveryError, SpecError
from skein.lineage import Lineage, SchemaCache, analyze_sql, mentioned_datasets
from skein.ownership import Ownership, OwnershipResolver, parse_view_comment
from skein.paths import GIT_NO_REPO_PROGRAMS, not_utf8_name, printable_name, symlink_on_path
from skein.spec import Campaign
from skein.warehouse import Warehouse

# Below this many consumers a process pool costs more than it saves.
PARALLEL_THRESHOLD = 200

# sqlglot needs ~400x a file's size in memory to parse it (a 20 MB file took 9 GB): larger
# files are generated code or data, not queries a reviewer can check, so they are escalated.
MAX_CONSUMER_BYTES = 1 << 20


@dataclass
class Consumer:
    id: str
    kind: str  # sql | dbt_model | view
    dialect: str
    sql: str  # what is analysed: the file, the rendered dbt model, the view's DDL
    ownership: Ownership
    repo: str | None = None
    path: str | None = None  # inside the repo
    file: Path | None = None
    produces: str | None = None  # known before analysis (dbt models, views)
    line_map: list[int] | None = None  # analysed line -> line in the file (dbt)
    error: str | None = None  # could not even be rendered
    dbt_project_root: Path | None = None
    lineage: Lineage = field(default_factory=Lineage)

    def file_line(self, line: int) -> int:
        if self.line_map and 0 < line <= len(self.line_map):
            return self.line_map[line - 1]
        return line

    @functools.cached_property
    def mentions(self) -> frozenset[str]:
        """Dataset names in the text: what an unparseable consumer may read."""
        return mentioned_datasets(self.sql)

    @property
    def output(self) -> str | None:
        return self.produces or self.lineage.produces


@dataclass
class Catalog:
    schemas: dict[str, dict[str, str]]
    consumers: list[Consumer]
    problems: list[str] = field(default_factory=list)  # non-fatal: unreadable files etc.
    default_schema: str = "main"

    def by_id(self) -> dict[str, Consumer]:
        return {c.id: c for c in self.consumers}


def build_catalog(campaign: Campaign, warehouse: Warehouse, workers: int | None = None) -> Catalog:
    schemas = warehouse.schemas()
    consumers, problems = scan_consumers(campaign, warehouse)
    catalog = Catalog(schemas=schemas, consumers=consumers, problems=problems,
                      default_schema=warehouse.default_schema)
    analyze_consumers(catalog, warehouse.default_schema, workers)
    # A warehouse view that a repository file defines is that file's deployment, not a
    # consumer of its own: the file is where the code changes.
    repo_outputs = {c.output for c in catalog.consumers if c.kind != "view" and c.output}
    catalog.consumers = [c for c in catalog.consumers
                         if not (c.kind == "view" and c.produces in repo_outputs)]
    return catalog


def scan_consumers(campaign: Campaign, warehouse: Warehouse) -> tuple[list[Consumer], list[str]]:
    consumers: list[Consumer] = []
    problems: list[str] = []
    for index, entry in enumerate(campaign.consumers):
        if entry.warehouse_views:
            consumers.extend(_view_consumers(warehouse, entry.dialect or campaign.sql_dialect))
            continue
        repos = repositories(campaign, index)
        default_dialect = entry.dialect or campaign.sql_dialect
        for repo in repos:
            consumers.extend(_repo_consumers(repo, default_dialect, entry.exclude, problems))
    ids = [c.id for c in consumers]
    if len(ids) != len(set(ids)):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise DiscoveryError(f"consumer ids found twice (overlapping `consumers` entries?): {dupes[:5]}")
    return sorted(consumers, key=lambda c: c.id), problems


def repositories(campaign: Campaign, index: int) -> list[Path]:
    """The git repositories ``consumers[index].repo`` matches; none is a ``SpecError``
    naming the entry (``skein validate`` finds it before any run does)."""
    entry = campaign.consumers[index]
    pattern = str(campaign.base_dir / entry.repo)
    repos = sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / ".git").exists())
    if not repos:
        raise campaign.error(f"no git repository matches {entry.repo!r} "
                             f"(looked for {pattern})", "consumers", index, "repo")
    return repos


def repository_problems(campaign: Campaign) -> list[SpecError]:
    """Every ``consumers`` entry whose repository glob matches no git repository."""
    problems = []
    for index, entry in enumerate(campaign.consumers):
        if not entry.warehouse_views:
            try:
                repositories(campaign, index)
            except SpecError as exc:
                problems.append(exc)
    return problems


def _view_consumers(warehouse: Warehouse, dialect: str) -> list[Consumer]:
    return [Consumer(id=f"warehouse/{view.name}", kind="view", dialect=dialect, sql=view.sql,
                     ownership=parse_view_comment(view.comment), produces=view.name)
            for view in warehouse.views()]


def _tracked_files(repo: Path) -> list[str]:
    try:
        out = subprocess.run(["git", *GIT_NO_REPO_PROGRAMS, "-C", str(repo), "ls-files", "-z"], check=True,
                             capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DiscoveryError(f"cannot list files of git repository {repo}: {exc}") from None
    return sorted(p for p in out.decode("utf-8", "surrogateescape").split("\0") if p)


def _repo_consumers(repo: Path, default_dialect: str, exclude: list[str],
                    problems: list[str]) -> list[Consumer]:
    files = []
    for rel in _tracked_files(repo):
        if any(fnmatch.fnmatch(rel, x) for x in exclude):
            continue
        link = symlink_on_path(repo, rel)
        if link is None:
            files.append(rel)
        elif rel.endswith(".sql"):
            problems.append(f"{repo.name}/{rel}: {link}: Skein reads and writes only regular "
                            "files inside the repository, so it is not a consumer")
    owners = OwnershipResolver(repo)
    projects = _dbt_projects(repo, files)
    try:
        consumers = [c for rel in files if rel.endswith(".sql")
                     for c in [_file_consumer(repo, rel, projects, owners, default_dialect,
                                              problems)] if c is not None]
    finally:
        for project in projects.values():
            if isinstance(project, DbtProject):
                project.close()  # its renderer process: the agents load their own
    problems.extend(owners.problems)
    problems.extend(f"{repo.name}/{root.relative_to(repo.resolve())}: {error}" for root, error in
                    projects.items() if isinstance(error, str))
    return consumers


def _escalate_bad_name(consumer: Consumer, problems: list[str]) -> bool:
    """A consumer whose repository or file name is not UTF-8 keeps an id with those bytes
    escaped and is escalated if it mentions the source (nothing is written to it)."""
    why = not_utf8_name(consumer.id)
    if why is None:
        return False
    path = consumer.file
    consumer.id, consumer.error = printable_name(consumer.id), why
    consumer.repo, consumer.path = printable_name(consumer.repo), printable_name(consumer.path)
    consumer.file = None  # never read as text nor written: only its mentions are looked for
    problems.append(f"{consumer.id}: {why}")
    try:
        with open(path, "rb") as handle:
            _set_mentions(consumer, handle.read(MAX_CONSUMER_BYTES).decode("latin-1"))
    except OSError:
        _set_mentions(consumer, "")
    return True


def _file_consumer(repo: Path, rel: str, projects: dict[Path, DbtProject | str],
                   owners: OwnershipResolver, default_dialect: str,
                   problems: list[str]) -> Consumer | None:
    path = repo / rel
    root = _project_of(path, projects)
    project = projects.get(root) if root is not None else None
    if isinstance(project, DbtProject) and project.is_skipped(path):
        return None
    ownership = owners.for_file(path)
    consumer = Consumer(id=f"{repo.name}/{rel}", kind="sql", repo=repo.name, path=rel, file=path,
                        dialect=ownership.dialect or default_dialect, sql="", ownership=ownership)
    if _escalate_bad_name(consumer, problems):
        return consumer
    text = _read_consumer(consumer, path, problems)
    if text is None:
        return consumer
    consumer.sql = text
    if isinstance(project, str):  # the project's YAML cannot be read: nothing of it renders
        consumer.dbt_project_root = root
        consumer.error = f"dbt project cannot be read: {project}"
        consumer.sql = substitute_relations(None, text)
    elif project is not None:
        _render_model(consumer, project, path, text)
    return consumer


def _render_model(consumer: Consumer, project: DbtProject, path: Path, text: str) -> None:
    consumer.dbt_project_root = project.root
    if project.is_model(path):
        consumer.kind = "dbt_model"
        consumer.produces = project.relation(path.stem)
    try:
        rendered = project.render(path, text)
    except DbtRenderError as exc:
        consumer.error = str(exc)
        consumer.sql = substitute_relations(project, text)
    else:
        consumer.sql, consumer.line_map = rendered.sql, rendered.line_map


def _read_consumer(consumer: Consumer, path: Path, problems: list[str]) -> str | None:
    """The file's text, or None with ``consumer.error`` saying why it cannot be analysed.
    What it mentions is still read (cheaply, by name), so an unreadable consumer of the
    source is escalated rather than silently left behind."""
    try:
        size = path.stat().st_size
        if size > MAX_CONSUMER_BYTES:
            consumer.error = (f"too large to analyse: {size / 1e6:.1f} MB (limit "
                              f"{MAX_CONSUMER_BYTES >> 20} MiB); migrate it by hand")
            problems.append(f"{consumer.id}: {consumer.error}")
            with open(path, "rb") as handle:
                _set_mentions(consumer, handle.read().decode("latin-1"))
            return None
        data = path.read_bytes()
    except OSError as exc:
        consumer.error = f"cannot read file: {exc.strerror or exc}"
        problems.append(f"{consumer.id}: {consumer.error}")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        consumer.error = (f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}): "
                          "Skein edits UTF-8 files only; convert it, or migrate it by hand")
        problems.append(f"{consumer.id}: {consumer.error}")
        _set_mentions(consumer, data.decode("latin-1"))  # names are ASCII in any 8-bit encoding
        return None


def _set_mentions(consumer: Consumer, text: str) -> None:
    consumer.__dict__["mentions"] = mentioned_datasets(text)  # fills the cached_property


def _dbt_projects(repo: Path, files: list[str]) -> dict[Path, DbtProject | str]:
    """Each dbt project of the repository, innermost first; one whose YAML cannot be read
    is the reason (its consumers are escalated with it, the others are not affected)."""
    roots = sorted({(repo / f).parent for f in files if Path(f).name == "dbt_project.yml"},
                   key=lambda p: len(p.parts), reverse=True)
    projects: dict[Path, DbtProject | str] = {}
    for root in roots:
        members = [repo / f for f in files if f.endswith(".sql") and root in (repo / f).parents]
        try:
            projects[root.resolve()] = load_dbt_project(root, members)
        except DbtProjectError as exc:
            projects[root.resolve()] = str(exc)
    return projects


def _project_of(path: Path, projects: dict[Path, DbtProject | str]) -> Path | None:
    resolved = path.resolve()
    return next((root for root in projects if root in resolved.parents), None)


# -- analysis ---------------------------------------------------------------

_worker_cache: SchemaCache | None = None
_worker_default_schema = "main"


def _init_worker(schemas: dict[str, dict[str, str]], default_schema: str) -> None:
    global _worker_cache, _worker_default_schema
    _worker_cache = SchemaCache(schemas)
    _worker_default_schema = default_schema


def _init_pool_worker(schemas: dict[str, dict[str, str]], default_schema: str) -> None:
    # Ctrl-C reaches the whole process group: the parent stops the pool (_stop_workers), so
    # a worker reporting it too would only print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(schemas, default_schema)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers now, mid-batch: shutting down waits for every queued batch
    (minutes on a large fleet). The executor has no public way before Python 3.14
    (``terminate_workers``), hence its ``_processes``."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


def _analyze_batch(batch: list[tuple[str, str]]) -> list[Lineage]:
    return [analyze_sql(sql, dialect, _worker_cache, _worker_default_schema) for sql, dialect in batch]


def analyze_consumers(catalog: Catalog, default_schema: str, workers: int | None = None) -> None:
    """Fill ``consumer.lineage`` for every consumer, in processes when it pays."""
    todo = [c for c in catalog.consumers if c.error is None]
    jobs = [(c.sql, c.dialect) for c in todo]
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < PARALLEL_THRESHOLD:
        _init_worker(catalog.schemas, default_schema)
        results = _analyze_batch(jobs)
    else:
        size = max(20, len(jobs) // (workers * 8))  # small batches keep both cores busy to the end
        batches = [jobs[i:i + size] for i in range(0, len(jobs), size)]
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                              else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_pool_worker,
                                   initargs=(catalog.schemas, default_schema))
        try:
            results = [lin for batch in pool.map(_analyze_batch, batches) for lin in batch]
        except KeyboardInterrupt:
            _stop_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    for consumer, lineage in zip(todo, results):
        consumer.lineage = lineage
    _analyze_unknown_outputs(catalog, default_schema)


def _analyze_unknown_outputs(catalog: Catalog, default_schema: str) -> None:
    """Datasets produced by consumers but absent from the warehouse (a dbt model never
    run, a view not deployed) get their schema from the producer's output columns;
    consumers reading them are analysed again, level by level."""
    for _ in range(len(catalog.consumers)):
        known = catalog.schemas
        added = {c.output: dict.fromkeys(c.lineage.outputs, "UNKNOWN") for c in catalog.consumers
                 if c.output and c.output not in known and c.lineage.error is None and c.lineage.outputs}
        if not added:
            return
        catalog.schemas = {**known, **added}
        cache = SchemaCache(catalog.schemas)
        for consumer in catalog.consumers:
            if consumer.error is None and set(consumer.lineage.reads) & set(added):
                consumer.lineage = analyze_sql(consumer.sql, consumer.dialect, cache, default_schema)
