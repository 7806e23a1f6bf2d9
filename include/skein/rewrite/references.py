"""Find every reference to the source dataset in one statement, with its position.

Two trees of the same text: the original (positions, never changed) and an
analysis copy that ``qualify`` resolves (it rewrites the tree: expands ``*``,
turns USING into ON). Identifiers keep their byte offsets in both, which is how
a resolved column in the copy points back at the text to edit.

>>> schemas = {"a.p": {"user_id": "INT", "ms": "INT"}, "a.u": {"user_id": "INT"}}
>>> stmt = sqlglot.parse_one("SELECT p.user_id, u.user_id FROM a.p AS p JOIN a.u AS u ON p.ms > 0")
>>> refs = find_references(stmt, "a.p", "duckdb", SchemaCache(schemas))
>>> [(c.column, c.node.sql()) for c in refs.columns]
[('user_id', 'p.user_id'), ('ms', 'p.ms')]
>>> [(t.node.sql(), t.alias) for t in refs.tables]
[('a.p AS p', 'p')]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot  # noqa: F401 - the doctest above uses it
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

from skein.lineage import SchemaCache, normalize_names, split_statement, dataset_name


class UnsupportedReference(Exception):
    """A reference the rules cannot rewrite safely: the agent escalates with this reason."""


@dataclass
class TableRef:
    node: exp.Table  # in the original tree
    alias: str | None  # the alias as written, if any
    qualified_by_name: bool = False  # some column is qualified with the bare table name


@dataclass
class ColumnRef:
    node: exp.Column  # in the original tree
    column: str  # source column, lowercase
    source_alias: str  # how the source is known in its scope (alias or table name)
    needs_qualifier: bool  # unqualified, but the replacement must say which table
    bare_projection: bool  # a projection without alias: the rewrite must keep its name


@dataclass
class StarRef:
    node: exp.Expression  # exp.Star, or exp.Column whose `this` is a Star (t.*)
    expansion: list[tuple[str, str, bool]]  # (source alias, column, is the source?)
    qualify_all: bool  # several sources: every expanded column gets its qualifier
    internal: bool = False  # in a CTE or derived table, not the consumer's output


@dataclass
class SourceRefs:
    tables: list[TableRef] = field(default_factory=list)
    columns: list[ColumnRef] = field(default_factory=list)
    stars: list[StarRef] = field(default_factory=list)
    using_columns: list[str] = field(default_factory=list)  # USING (...) columns in the query
    using_joins: list[exp.Join] = field(default_factory=list)  # in the original tree


def find_references(statement: exp.Expression, source: str, dialect: str, cache: SchemaCache,
                    default_schema: str = "main", placeholders: dict[str, str] | None = None
                    ) -> SourceRefs:
    """Resolve ``statement`` (original tree, not modified) against the catalog.

    ``placeholders`` maps masked dbt relations (``main._j0``) to what they stand for.
    """
    if placeholders:
        source_placeholders = {p for p, relation in placeholders.items() if relation == source}
        is_source = lambda name: name == source or name in source_placeholders  # noqa: E731
    else:
        is_source = lambda name: name == source  # noqa: E731
    analysis = statement.copy()
    normalize_names(analysis, default_schema)
    query, _ = split_statement(analysis)
    refs = SourceRefs()
    original_query, _ = split_statement(statement)
    if query is None or original_query is None:
        if any(is_source(dataset_name(t)) for t in analysis.find_all(exp.Table)):
            raise UnsupportedReference(f"{statement.key.upper()} statements are not rewritten by rules")
        return refs
    if any(isinstance(n, (exp.Pivot, exp.Columns)) for n in query.walk()) and \
            any(is_source(dataset_name(t)) for t in query.find_all(exp.Table)):
        raise UnsupportedReference("PIVOT or COLUMNS(...) over the source: which columns it reads "
                                   "depends on the data or a pattern; not rewritten by rules")
    try:
        qualified = qualify(query, dialect=dialect, schema=cache.for_dialect(dialect), db=default_schema,
                            quote_identifiers=False, identify=False, validate_qualify_columns=True)
    except (SqlglotError, KeyError, ValueError) as exc:
        raise UnsupportedReference(f"cannot resolve columns: {str(exc).splitlines()[0]}") from None
    by_start = _index_original(original_query)
    seen = _collect_tables_and_columns(qualified, is_source, by_start, refs)
    _collect_unmatched_columns(original_query, is_source, cache.schemas, default_schema, refs, seen)
    _collect_stars(original_query, is_source, cache.schemas, default_schema, refs)
    _check_using(original_query, refs)
    return refs


def _start(node: exp.Expression) -> int | None:
    return node.meta.get("start") if isinstance(node, exp.Identifier) else None


def _index_original(query: exp.Expression) -> dict[tuple[str, int], exp.Expression]:
    index: dict[tuple[str, int], exp.Expression] = {}
    for node in query.walk():
        if isinstance(node, exp.Column) and isinstance(node.this, exp.Identifier):
            start = _start(node.this)
            if start is not None:
                index[("column", start)] = node
        elif isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            start = _start(node.this)
            if start is not None:
                index[("table", start)] = node
    return index


def _resolve(scope: Scope, alias: str):
    hops = 0
    while scope is not None:
        if alias in scope.sources:
            return scope.sources[alias], hops
        scope, hops = scope.parent, hops + 1
    return None, hops


def _collect_tables_and_columns(qualified: exp.Expression, is_source, by_start,
                                refs: SourceRefs) -> set[int]:
    """Fills ``refs``; returns the offsets of every column qualify kept in the tree."""
    root = build_scope(qualified)
    if root is None:
        return set()
    seen_tables: dict[int, TableRef] = {}
    seen_starts = {_start(c.this) for c in qualified.find_all(exp.Column)
                   if isinstance(c.this, exp.Identifier) and _start(c.this) is not None}
    for scope in root.traverse():
        for name, node in scope.sources.items():
            if isinstance(node, exp.Table) and is_source(dataset_name(node)):
                original = by_start.get(("table", _start(node.this)))
                if original is None:
                    raise UnsupportedReference(f"cannot locate table reference {node.sql()} in the text")
                if id(original) not in seen_tables:
                    alias = original.alias or None
                    seen_tables[id(original)] = TableRef(original, alias)
                    refs.tables.append(seen_tables[id(original)])
        for column in scope.columns:
            if not column.table:
                continue  # a projection alias reference: unchanged by the migration
            node, hops = _resolve(scope, column.table)
            if not (isinstance(node, exp.Table) and is_source(dataset_name(node))):
                continue
            original = by_start.get(("column", _start(column.this)))
            if original is None:
                continue  # generated by qualify (star expansion, USING): handled elsewhere
            table_ref = seen_tables.get(id(by_start.get(("table", _start(node.this)))))
            if original.table and table_ref is not None and table_ref.alias is None:
                table_ref.qualified_by_name = True
            multi = len(scope.selected_sources) > 1 or hops > 0
            refs.columns.append(ColumnRef(
                node=original, column=column.name.lower(), source_alias=column.table,
                needs_qualifier=not original.table and multi,
                bare_projection=_is_bare_projection(original)))
    return seen_starts


def _collect_unmatched_columns(query, is_source, schemas, default_schema: str, refs: SourceRefs,
                               seen_starts: set[int]):
    """Columns qualify rewrote out of the tree (``ORDER BY sum(x)`` becomes ``ORDER BY
    alias``) are resolved on the original tree instead, with the same rules."""
    root = build_scope(query)
    for scope in root.traverse() if root else ():
        aliases = {p.alias.lower() for p in getattr(scope.expression, "expressions", [])
                   if isinstance(p, exp.Alias)}
        for column in scope.columns:
            if "start" not in column.this.meta or column.this.meta["start"] in seen_starts:
                continue
            name = column.name.lower()
            if column.table:
                node, hops = _resolve(scope, column.table)
                candidates = [(column.table, node)] if isinstance(node, exp.Table) else []
            else:
                if name in aliases or name in refs.using_columns:
                    continue  # an output alias, or USING's merged column: not the source's
                candidates = [(alias, scope.sources.get(alias)) for alias in scope.selected_sources
                              if name in (_columns_of(scope.sources.get(alias), schemas,
                                                      default_schema) or [])]
                hops = 0
            if len(candidates) != 1:
                continue
            alias, node = candidates[0]
            if not (isinstance(node, exp.Table) and is_source(_dataset(node, default_schema))):
                continue
            refs.columns.append(ColumnRef(
                node=column, column=name, source_alias=alias.lower(),
                needs_qualifier=not column.table and (len(scope.selected_sources) > 1 or hops > 0),
                bare_projection=_is_bare_projection(column)))


def rows_ignore_projections(select: exp.Select) -> bool:
    """Leaving a column out of this SELECT's list cannot change its rows (no DISTINCT,
    GROUP BY or set operation, where every listed column counts)."""
    return not (select.args.get("distinct") or select.args.get("group")
                or isinstance(select.parent, exp.SetOperation))


def _is_bare_projection(column: exp.Column) -> bool:
    parent = column.parent
    return isinstance(parent, exp.Select) and column in parent.expressions


def _collect_stars(query: exp.Expression, is_source, schemas, default_schema: str,
                   refs: SourceRefs) -> None:
    root = build_scope(query)
    if root is None:
        return
    for scope in root.traverse():
        select = scope.expression
        if not isinstance(select, exp.Select) or isinstance(select.parent, exp.Exists):
            continue  # EXISTS (SELECT * ...) outputs nothing anyone reads
        for projection in select.expressions:
            star = _star_of(projection)
            if star is None:
                continue
            qualifier = projection.table if isinstance(projection, exp.Column) else None
            names = [qualifier] if qualifier else list(scope.selected_sources)
            expansion = []
            for name in names:
                node, _ = _resolve(scope, name)
                columns = _columns_of(node, schemas, default_schema)
                if columns is None:
                    if _touches(node, is_source, default_schema):
                        raise UnsupportedReference(f"cannot expand `{projection.sql()}`: the columns "
                                                   f"of {name} are unknown")
                    expansion = None
                    break
                from_source = isinstance(node, exp.Table) and is_source(_dataset(node, default_schema))
                excluded = star_excluded(star)
                expansion.extend((name, c, from_source) for c in columns if c not in excluded)
            if expansion and any(s for _, _, s in expansion):
                refs.stars.append(StarRef(node=projection, expansion=expansion,
                                          qualify_all=len(names) > 1,
                                          internal=scope.is_cte or scope.is_derived_table))


def _star_of(projection: exp.Expression) -> exp.Star | None:
    star = projection.this if isinstance(projection, exp.Column) else projection
    if not isinstance(star, exp.Star):
        return None
    if star.args.get("replace") or star.args.get("rename"):
        raise UnsupportedReference(f"`{projection.sql()}`: star REPLACE/RENAME is not rewritten by rules")
    return star


def star_excluded(star: exp.Star) -> set[str]:
    """Columns a ``* EXCEPT (...)`` / ``* EXCLUDE (...)`` leaves out."""
    return {c.name.lower() for c in star.args.get("except_") or star.args.get("except") or []}


def _dataset(table: exp.Table, default_schema: str) -> str:
    copy = table.copy()
    normalize_names(copy, default_schema)
    name = dataset_name(copy)
    return name if "." in name else f"{default_schema}.{name}"


def _columns_of(node, schemas, default_schema: str) -> list[str] | None:
    if isinstance(node, exp.Table):
        name = _dataset(node, default_schema)
        return list(schemas[name]) if name in schemas else None
    if isinstance(node, Scope):
        names = node.expression.named_selects if hasattr(node.expression, "named_selects") else []
        return None if any(n == "*" for n in names) else [n.lower() for n in names]
    return None


def _touches(node, is_source, default_schema: str) -> bool:
    if isinstance(node, exp.Table):
        return is_source(_dataset(node, default_schema))
    if isinstance(node, Scope):
        return any(is_source(_dataset(t, default_schema)) for t in node.expression.find_all(exp.Table))
    return False


def _check_using(query: exp.Expression, refs: SourceRefs) -> None:
    """Columns joined with USING in a query that reads the source: the merged column
    has no single table, so a renamed one cannot be spliced (``map_columns`` escalates)."""
    if not refs.tables:
        return
    for join in query.find_all(exp.Join):
        if join.args.get("using"):
            refs.using_joins.append(join)
        for ident in join.args.get("using") or []:
            refs.using_columns.append(ident.name.lower())


__all__ = ["find_references", "SourceRefs", "TableRef", "ColumnRef", "StarRef",
           "UnsupportedReference"]
