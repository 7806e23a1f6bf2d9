"""Each model's output columns from the dbt graph, for a project that was never built.

As SQLMesh does: walk the models in dependency order and qualify each compiled query with
sqlglot against what is known so far (seed CSV headers typed by DuckDB's sniffer, the columns
a source declares in YAML, the upstream models already inferred); the projection names are
the model's columns, and sqlglot's type annotation gives their types where it can. Names come
out lowercase, as sqlglot normalises DuckDB's case-insensitive identifiers (Skein compares
names case-insensitively everywhere).

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
from sqlglot.schema import MappingSchema

from skein.dbt_graph import DbtGraph
from skein.dbt_manifest import Column, Node

SNAPSHOT_COLUMNS = (Column("dbt_scd_id", "TEXT"), Column("dbt_updated_at", "TIMESTAMP"),
                    Column("dbt_valid_from", "TIMESTAMP"), Column("dbt_valid_to", "TIMESTAMP"))


@dataclass(frozen=True)
class Inferred:
    columns: tuple[Column, ...] | None  # None: unknown, see reason
    reason: str | None = None

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


def output_columns(sql: str, schema: MappingSchema) -> Inferred:
    """The projection of the last query in ``sql``, qualified against ``schema``.

    >>> s = MappingSchema({"db": {"main": {"t": {"a": "INT", "b": "TEXT"}}}}, dialect="duckdb")
    >>> output_columns('select *, a + 1 as c from db.main.t', s).columns  # doctest: +NORMALIZE_WHITESPACE
    (Column(name='a', data_type='INT'), Column(name='b', data_type='TEXT'),
     Column(name='c', data_type='INT'))
    >>> output_columns('select * from db.main.u', s).reason
    'select * over a relation whose columns are unknown'
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if isinstance(s, exp.Query)]
        if not statements:
            return Inferred(None, "compiled SQL holds no query")
        query = qualify(statements[-1], schema=schema, dialect="duckdb",
                        validate_qualify_columns=False, quote_identifiers=False)
        if any(isinstance(s, exp.Star) or (isinstance(s, exp.Column) and s.is_star)
               for s in query.selects):
            return Inferred(None, "select * over a relation whose columns are unknown")
        typed = annotate_types(query, schema=schema, dialect="duckdb")
    except (SqlglotError, ValueError, KeyError) as exc:
        return Inferred(None, f"sqlglot: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
    return Inferred(tuple(Column(s.alias_or_name, _type(s)) for s in typed.selects))


def _type(select: exp.Expression) -> str | None:
    kind = select.type
    if kind is None or kind.is_type(exp.DataType.Type.UNKNOWN):
        return None
    return kind.sql("duckdb")


def infer_columns(graph: DbtGraph) -> dict[str, Inferred]:
    """Columns of every model and snapshot of ``graph`` (and of the seeds and sources that
    seeded the walk), by unique id."""
    known: dict[str, Inferred] = {uid: Inferred(cols) for uid, cols in graph.seeds if cols}
    for node in graph.manifest.of_type("seed"):
        if node.unique_id not in known and node.columns:
            known[node.unique_id] = Inferred(node.columns)
    for source in graph.manifest.sources:
        known[source.unique_id] = Inferred(source.columns or None,
                                           None if source.columns else "the source declares no columns")
    relations = {n.unique_id: n for n in graph.manifest.nodes} | {
        s.unique_id: s for s in graph.manifest.sources}
    models = [n for n in graph.manifest.nodes if n.resource_type in ("model", "snapshot")]
    for node in dependency_order(models):
        known[node.unique_id] = _infer_one(node, _schema(known, relations, graph.parser == "dbt"))
    return known


def _infer_one(node: Node, schema: MappingSchema) -> Inferred:
    if node.compiled_code is None:
        return Inferred(None, f"not compiled: {node.compile_error or 'no compiled SQL'}")
    if node.path.endswith(".py"):
        return Inferred(None, "a Python model: its output is not SQL")
    inferred = output_columns(node.compiled_code, schema)
    if node.resource_type == "snapshot" and inferred.columns is not None:
        return Inferred(inferred.columns + SNAPSHOT_COLUMNS)
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
