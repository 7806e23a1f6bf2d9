"""The data consumers run on in a dry run: the warehouse's datasets, sampled consistently.

Datasets larger than ``simulation.sample_rows`` are sampled by a hash of their
``sample_keys`` into one bucket count per run, so rows kept in one dataset keep their join
partners in the others. ``load_worlds`` fills the simulation's two sandboxes (old world:
with the source; new world: with the target instead); ``WarehouseSamples`` reads the same
samples one dataset at a time, on demand, for the gate's dry run.

Inputs are read with the sandbox's limits (``ReadLimits.of(campaign.simulation)``): a view
is other teams' SQL, so one that reads a file, runs too long or is broken is not loaded;
``load_worlds`` returns why, and the consumers reading it fail with that reason.

>>> sample_query("analytics.users", 10, 100, None, 1)
'SELECT * FROM analytics.users'
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import duckdb

from skein.errors import WarehouseError
from skein.simulation.sandbox import Sandbox, SandboxError
from skein.warehouse import ReadLimits, Warehouse, open_warehouse

if TYPE_CHECKING:
    import pyarrow

    from skein.spec import Campaign


def sample_query(name: str, rows: int, limit: int, keys: list[str] | None, buckets: int,
                 dialect: str = "duckdb") -> str:
    """All rows up to ``limit``; above it, the rows whose key hashes into bucket 0 of
    ``buckets``. One bucket count per run, so a key kept in one dataset is kept in all of
    them and joins keep their partners; without a key, a hash of the whole row. The query
    runs in the warehouse (``dialect``: duckdb or postgres).

    >>> sample_query("analytics.plays", 10, 100, ["user_id"], 10)
    'SELECT * FROM analytics.plays'
    >>> sample_query("analytics.plays", 1000, 100, ["user_id"], 10)
    'SELECT * FROM analytics.plays AS t WHERE hash(t."user_id") % 10 = 0'
    >>> sample_query("analytics.plays", 1000, 100, ["user_id"], 10, "postgres")
    'SELECT * FROM analytics.plays AS t WHERE abs(hashtext((t."user_id")::text)::bigint) % 10 = 0'
    """
    from sqlglot import exp

    table = exp.to_table(name).sql(dialect=dialect)
    if rows <= limit:
        return f"SELECT * FROM {table}"
    columns = [f"t.{exp.to_identifier(k, quoted=True).sql(dialect)}" for k in keys or []]
    if dialect == "duckdb":
        bucket = f"hash({', '.join(columns) or 't'})"
    elif dialect == "postgres":  # hashtext of the text form: the same for int and bigint keys
        key = columns[0] if len(columns) == 1 else f"ROW({', '.join(columns)})" if columns else "t"
        bucket = f"abs(hashtext(({key})::text)::bigint)"
    else:
        raise SandboxError(f"cannot sample a {dialect} warehouse")
    return f"SELECT * FROM {table} AS t WHERE {bucket} % {buckets} = 0"


def open_campaign_warehouse(campaign: Campaign) -> Warehouse:
    """The campaign's warehouse, every read bounded as the sandbox is."""
    return open_warehouse(campaign.warehouse, campaign.base_dir, ReadLimits.of(campaign.simulation))


def load_worlds(campaign: Campaign, warehouse: Warehouse, inputs, source: str, target: str,
                old_world: Sandbox | None, new_world: Sandbox) -> dict[str, str]:
    """Read every input (sampled, in the warehouse's own SQL) into both worlds as Arrow,
    then lock both. Returns the inputs that could not be read: dataset -> why.

    The old world gets every input, the new world every input but the source, plus the
    target: read from the warehouse, else built by the campaign's ``forward`` query on the
    old world's sampled inputs. ``old_world`` may be ``None`` (monitoring runs the new code
    only); the target must then exist in the warehouse."""
    schemas = warehouse.schemas()
    sizes, unreadable = row_counts(warehouse, [n for n in dict.fromkeys([*inputs, target])
                                               if n in schemas])
    buckets = _bucket_count(sizes.values(), campaign.simulation.sample_rows)
    for name in sizes:
        if old_world is None and name == source:
            continue  # monitoring: the source may be retired; its size still sets the buckets
        try:
            data = _read_sample(campaign, warehouse, name, sizes[name], buckets, source, target)
        except WarehouseError as exc:
            unreadable[name] = str(exc)
            continue
        if old_world is not None and name in inputs:
            old_world.load(name, data)
        if name != source:
            new_world.load(name, data)
    if target not in schemas and campaign.forward and old_world is not None:
        new_world.load(target, _forward(campaign, old_world))
    if old_world is not None:
        old_world.lock()
    new_world.lock()
    return unreadable


def row_counts(warehouse: Warehouse, names) -> tuple[dict[str, int], dict[str, str]]:
    """Rows of each dataset, and why a dataset could not be counted (a view the sandbox
    refuses). Counting runs a view's SQL: it is read with the same limits as its rows."""
    sizes, unreadable = {}, {}
    for name in names:
        try:
            sizes[name] = warehouse.row_count(name)
        except WarehouseError as exc:
            unreadable[name] = str(exc)
    return sizes, unreadable


def unreadable_input(reads, unreadable: dict[str, str]) -> str | None:
    """Why a consumer reading ``reads`` cannot run, or None.

    >>> unreadable_input({"rpt.v", "a.t"}, {"rpt.v": "warehouse 'w': PermissionException: no"})
    "cannot read rpt.v from the warehouse inside the sandbox: warehouse 'w': PermissionException: no"
    """
    blocked = sorted(set(reads) & set(unreadable))
    if not blocked:
        return None
    return (f"cannot read {blocked[0]} from the warehouse inside the sandbox: "
            f"{unreadable[blocked[0]]}")


class WarehouseSamples(Mapping[str, "pyarrow.Table"]):
    """The campaign warehouse's datasets, sampled as the simulation samples them, read
    lazily: dataset name (``schema.table``, case-insensitive) -> Arrow table.

    Nothing is read until a dataset is accessed (``in`` and ``len`` read the catalog
    only); each dataset is then read once and kept. The bucket count is fixed at the first
    access, from the row counts of the source, the target and ``datasets`` (e.g. every
    dataset the consumers read), so samples of different datasets keep their join partners.
    The target, when the warehouse does not have it yet, is built by the campaign's
    ``forward`` query on the sampled inputs, as ``load_worlds`` builds it. Datasets the
    warehouse does not have raise ``KeyError``.

    >>> from skein.spec import Campaign
    >>> campaign = Campaign.model_validate({"campaign": "c", "title": "t", "owners": ["o"],
    ...     "warehouse": "duckdb:///not-created-yet.duckdb", "source": "a.x", "target": "a.y"})
    >>> samples = WarehouseSamples(campaign)  # the warehouse is not even opened yet
    >>> samples
    WarehouseSamples('c', read=[])
    """

    def __init__(self, campaign: Campaign, datasets: Iterable[str] = ()):
        self.campaign = campaign
        self.source, self.target = campaign.source.lower(), campaign.target.lower()
        self.datasets = tuple(sorted({d.lower() for d in datasets}))
        self._warehouse: Warehouse | None = None
        self._schemas: dict[str, dict[str, str]] | None = None
        self._buckets: int | None = None
        self._tables: dict[str, pyarrow.Table] = {}
        self._lock = threading.RLock()  # agents may verify proposals from several threads

    def __getitem__(self, name: str) -> pyarrow.Table:
        name = name.lower()
        with self._lock:
            if name not in self._tables:
                if name not in self:
                    raise KeyError(name)
                self._tables[name] = self._read(name)
            return self._tables[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names()))

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"WarehouseSamples({self.campaign.campaign!r}, read={sorted(self._tables)})"

    def _names(self) -> set[str]:
        schemas = self._catalog()
        buildable = {self.target} if self.campaign.forward else set()  # built on demand
        return set(schemas) | buildable

    def _catalog(self) -> dict[str, dict[str, str]]:
        with self._lock:
            if self._schemas is None:
                self._warehouse = open_campaign_warehouse(self.campaign)
                self._schemas = self._warehouse.schemas()
            return self._schemas

    def _read(self, name: str) -> pyarrow.Table:
        schemas = self._catalog()
        if name not in schemas:  # the target, not built yet: the campaign's forward query
            return self._built_target()
        if self._buckets is None:
            sizes, _ = row_counts(self._warehouse, sorted({self.source, self.target, *self.datasets}
                                                          & set(schemas)))
            self._buckets = _bucket_count(sizes.values(), self.campaign.simulation.sample_rows)
        return _read_sample(self.campaign, self._warehouse, name, self._warehouse.row_count(name),
                            self._buckets, self.source, self.target)

    def _built_target(self) -> pyarrow.Table:
        from skein.lineage import mentioned_datasets

        inputs = sorted(mentioned_datasets(self.campaign.forward) & set(self._catalog()))
        with Sandbox(timeout_s=self.campaign.simulation.timeout_s,
                     memory_limit=self.campaign.simulation.memory_limit) as world:
            for name in inputs:
                world.load(name, self[name])
            return _forward(self.campaign, world)


def _bucket_count(sizes: Iterable[int], sample_rows: int) -> int:
    """Buckets so that the largest dataset keeps about ``sample_rows`` rows.

    >>> _bucket_count([1000, 20], 100), _bucket_count([], 100)
    (10, 1)
    """
    return max(1, -(-max(sizes, default=0) // sample_rows))


def _read_sample(campaign: Campaign, warehouse: Warehouse, name: str, rows: int, buckets: int,
                 source: str, target: str) -> pyarrow.Table:
    """One dataset's sample, keyed by its ``sample_keys`` (the target, without keys of its
    own: the source's keys, renamed as the campaign's ``columns`` say)."""
    settings = campaign.simulation
    keys = settings.sample_keys.get(name)
    if keys is None and name == target:
        from skein.rewrite.render import is_plain_column

        keys = [is_plain_column(campaign.columns.get(k, k), campaign.sql_dialect) or k
                for k in settings.sample_keys.get(source, [])] or None
    return warehouse.read(sample_query(name, rows, settings.sample_rows, keys, buckets,
                                       warehouse.dialect))


def _forward(campaign: Campaign, world: Sandbox) -> pyarrow.Table:
    """The target built by the campaign's own SQL (trusted like the campaign file) on a
    world's inputs, before it is locked, in DuckDB whatever the campaign's dialect."""
    try:
        return world.connection.sql(_in_duckdb(campaign.forward, campaign.sql_dialect)).to_arrow_table()
    except duckdb.Error as exc:
        raise campaign.error(f"does not run in the simulation (as DuckDB SQL): "
                             f"{str(exc).splitlines()[0]}", "forward") from None


def _in_duckdb(sql: str, dialect: str) -> str:
    """A query in ``dialect`` as DuckDB SQL, catalog parts dropped as in the sandbox.

    >>> _in_duckdb("SELECT user_id::text AS u FROM wh.analytics.plays", "postgres")
    'SELECT CAST(user_id AS TEXT) AS u FROM analytics.plays'
    """
    import sqlglot
    from sqlglot import exp

    query = sqlglot.parse_one(sql, read=dialect)
    for table in query.find_all(exp.Table):
        table.set("catalog", None)
    return query.sql(dialect="duckdb")
