"""Each model's output columns from the dbt graph, for a project that was never built.

As SQLMesh does: walk the models in dependency order and qualify each compiled query with
sqlglot against what is known so far (seed CSV headers typed by DuckDB's sniffer, the columns
a source declares in YAML, the upstream models already inferred); the projection names are
the model's columns, and sqlglot's type annotation gives their types where it can. Names come
out lowercase, as sqlglot normalises DuckDB's case-insensitive identifiers (Skein compares
names case-insensitively everywhere).

Where a source's (or an unreadable seed's) columns come from: the warehouse when the caller
passes what it holds (``warehouse``: dataset -> columns, complete), else the YAML declaration.
YAML columns are documentation and may list only some columns, so a ``*`` expanded over them
marks the model ``partial`` (its dependents too, when they expand it with ``*`` in turn).

A model stays unknown, with the reason, when it did not compile, its SQL does not parse, or a
``*`` reads a relation whose columns are unknown; its dependents then see it as unknown too.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope
from sqlglot.schema import MappingSchema

from skein.dbt_graph import DbtGraph
from skein.dbt_manifest import Column, Node

SNAPSHOT_COLUMNS = (Column("dbt_scd_id", "TEXT"), Column("dbt_updated_at", "TIMESTAMP"),
                    Column("dbt_valid_from", "TIMESTAMP"), Column("dbt_valid_to", "TIMESTAMP"))


@dataclass(frozen=True)
class Inferred:
    columns: tuple[Column, ...] | None  # None: unknown, see reason
    reason: str | None = None
    partial: bool = False  # a `*` over YAML-declared columns: maybe more in the warehouse

    def names(self) -> list[str] | None:
        return None if self.columns is None else [c.name for c in self.columns]


def dependency_order(nodes: list[Node]) -> list[Node]:
    """``nodes`` with every node after the nodes it depends on (ties by unique id); a cycle,
    which dbt itself refuses, leaves its members at the end.

    >>> a, b = Node("model.p.a", "model", "a", "", "", "", "a", depends_on=("model.p.b",)), \\
    ...        Node("model.p.b", "model", "b", "", "", "", "b")
    >>> [n.name for n in dependency_order([a, b])]
    ['b', 'a']
    """
    by_id = {n.unique_id: n for n in nodes}
    done: set[str] = set()
    ordered: list[Node] = []
    pending = sorted(by_id)
    while pending:
        ready = [u for u in pending if all(d in done or d not in by_id for d in by_id[u].depends_on)]
        if not ready:
            ready = pending  # a cycle: dbt refuses those, so this is only a guard
        for uid in ready:
            done.add(uid)
            ordered.append(by_id[uid])
        pending = [u for u in pending if u not in done]
    return ordered


def output_columns(sql: str, schema: MappingSchema,
                   partial_tables: frozenset[tuple[str, str]] = frozenset()) -> Inferred:
    """The projection of the last query in ``sql``, qualified against ``schema``;
    ``partial_tables`` (schema, table) hold YAML-declared columns only.

    >>> s = MappingSchema({"db": {"main": {"t": {"a": "INT", "b": "TEXT"}}}}, dialect="duckdb")
    >>> output_columns('select *, a + 1 as c from db.main.t', s).columns  # doctest: +NORMALIZE_WHITESPACE
    (Column(name='a', data_type='INT'), Column(name='b', data_type='TEXT'),
     Column(name='c', data_type='INT'))
    >>> output_columns('select * from db.main.t', s, frozenset({("main", "t")})).partial
    True
    >>> output_columns('select * from db.main.u', s).reason
    'select * over a relation whose columns are unknown'
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if isinstance(s, exp.Query)]
        if not statements:
            return Inferred(None, "compiled SQL holds no query")
        partial = _stars_over(statements[-1], partial_tables)
        query = qualify(statements[-1], schema=schema, dialect="duckdb",
                        validate_qualify_columns=False, quote_identifiers=False)
        if any(isinstance(s, exp.Star) or (isinstance(s, exp.Column) and s.is_star)
               for s in query.selects):
            return Inferred(None, "select * over a relation whose columns are unknown")
        typed = annotate_types(query, schema=schema, dialect="duckdb")
    except (SqlglotError, ValueError, KeyError) as exc:
        return Inferred(None, f"sqlglot: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
    columns = tuple(Column(s.alias_or_name, _type(s)) for s in typed.selects)
    return Inferred(columns, PARTIAL if partial else None, partial)


PARTIAL = "a * expanded over columns declared in YAML, which may not list them all"


def _stars_over(query: exp.Expression, tables: frozenset[tuple[str, str]]) -> bool:
    """Whether a ``*`` of the output expands, through CTEs and derived tables, over one of
    ``tables`` (schema, table). A ``*`` inside a CTE whose columns are then named one by one
    does not count: the output's names do not depend on it.

    >>> t = frozenset({("m", "t")})
    >>> _stars_over(sqlglot.parse_one("with s as (select * from m.t), c as (select a from s) "
    ...                               "select * from c"), t)
    False
    >>> _stars_over(sqlglot.parse_one("with s as (select * from m.t) select s.* from s"), t)
    True
    """
    if not tables:
        return False
    root = build_scope(query.copy())
    return root is not None and _scope_star_reaches(root, tables)


def _scope_star_reaches(scope: Scope, tables: frozenset[tuple[str, str]]) -> bool:
    if isinstance(scope.expression, exp.SetOperation):
        return any(_scope_star_reaches(s, tables) for s in scope.union_scopes)
    if not isinstance(scope.expression, exp.Select):
        return False
    for item in scope.expression.expressions:
        if not (isinstance(item, exp.Star) or (isinstance(item, exp.Column) and item.is_star)):
            continue
        # selected_sources: what FROM/JOIN read (scope.sources also holds every CTE in reach).
        selected = scope.selected_sources
        names = [item.table] if isinstance(item, exp.Column) and item.table else list(selected)
        for name in names:
            source = selected[name][1] if name in selected else None
            if isinstance(source, exp.Table) and (source.db.lower(), source.name.lower()) in tables:
                return True
            if isinstance(source, Scope) and _scope_star_reaches(source, tables):
                return True
    return False


def _type(select: exp.Expression) -> str | None:
    kind = select.type
    if kind is None or kind.is_type(exp.DataType.Type.UNKNOWN):
        return None
    return kind.sql("duckdb")


def infer_columns(graph: DbtGraph,
                  warehouse: dict[str, tuple[Column, ...]] | None = None) -> dict[str, Inferred]:
    """Columns of every model and snapshot of ``graph`` (and of the seeds and sources that
    seeded the walk), by unique id. ``warehouse``: columns by dataset (``schema.table``)."""
    warehouse = {k.lower(): v for k, v in (warehouse or {}).items()}
    known: dict[str, Inferred] = {uid: Inferred(cols) for uid, cols in graph.seeds if cols}
    for node in graph.manifest.of_type("seed"):
        if node.unique_id not in known:
            known[node.unique_id] = _declared(node.columns, warehouse.get(node.dataset))
    for source in graph.manifest.sources:
        known[source.unique_id] = _declared(source.columns, warehouse.get(source.dataset))
    relations = {n.unique_id: n for n in graph.manifest.nodes} | {
        s.unique_id: s for s in graph.manifest.sources}
    models = [n for n in graph.manifest.nodes if n.resource_type in ("model", "snapshot")]
    for node in dependency_order(models):
        inferred = _infer_one(node, _schema(known, relations, graph.parser == "dbt"),
                              _partial_tables(known, relations))
        known[node.unique_id] = _blame_upstream(inferred, node, known)
    return known


def _blame_upstream(inferred: Inferred, node: Node, known: dict[str, Inferred]) -> Inferred:
    """A model that could not be inferred while something it reads is unknown: say so, as
    that is usually why (sqlglot cannot place a column of a relation it does not know)."""
    unknown = sorted(d.split(".")[-1] for d in node.depends_on
                     if d in known and known[d].columns is None)
    if inferred.columns is not None or not unknown or inferred.reason.startswith("not compiled"):
        return inferred
    return Inferred(None, f"{inferred.reason} (unknown columns upstream: {', '.join(unknown)})")


def _declared(yaml_columns: tuple[Column, ...], warehouse_columns) -> Inferred:
    if warehouse_columns:
        return Inferred(tuple(warehouse_columns))
    if yaml_columns:
        return Inferred(yaml_columns, "columns declared in YAML, which may not list them all", True)
    return Inferred(None, "the source declares no columns and the warehouse has no such table")


def _partial_tables(known: dict[str, Inferred], relations: dict) -> frozenset[tuple[str, str]]:
    return frozenset((r.dataset.split(".", 1)[0], r.dataset.split(".", 1)[1])
                     for uid, r in relations.items() if known.get(uid) and known[uid].partial)


def _infer_one(node: Node, schema: MappingSchema,
               partial_tables: frozenset[tuple[str, str]] = frozenset()) -> Inferred:
    if node.compiled_code is None:
        return Inferred(None, f"not compiled: {node.compile_error or 'no compiled SQL'}")
    if node.path.endswith(".py"):
        return Inferred(None, "a Python model: its output is not SQL")
    inferred = output_columns(node.compiled_code, schema, partial_tables)
    if node.resource_type == "snapshot" and inferred.columns is not None:
        return Inferred(inferred.columns + SNAPSHOT_COLUMNS, inferred.reason, inferred.partial)
    return inferred


def _schema(known: dict[str, Inferred], relations: dict, with_database: bool) -> MappingSchema:
    """What is known, as sqlglot's schema: catalog.schema.table with dbt (its compiled SQL
    names the database), schema.table with the fallback renderer."""
    mapping: dict = {}
    for uid, inferred in known.items():
        relation = relations.get(uid)
        if relation is None or inferred.columns is None or not _has_relation(relation):
            continue
        table = getattr(relation, "identifier", None) or relation.alias
        path = ([relation.database] if with_database else []) + [relation.schema, table]
        here = mapping
        for part in path[:-1]:
            here = here.setdefault(part.lower(), {})
        here[path[-1].lower()] = {c.name.lower(): c.data_type or "UNKNOWN" for c in inferred.columns}
    return MappingSchema(mapping, dialect="duckdb", normalize=True)


def _has_relation(relation) -> bool:
    """Ephemeral models have no relation: dbt inlines them as CTEs."""
    return getattr(relation, "materialized", None) != "ephemeral"
