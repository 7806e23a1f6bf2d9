"""Find every reference to the source dataset in one statement, with its position.

The statement is the parsed original, never changed: ``skein.rewrite.resolve`` says which
source each column node reads (scopes and the catalog's schemas, no ``qualify``), and the
nodes' identifiers carry the byte offsets the rules splice at.

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
from sqlglot.optimizer.scope import Scope

from skein.lineage import SchemaCache, split_statement
from skein.rewrite.resolve import SOURCE, Catalog, Resolution, Unresolved



def maybe_pivot_or_columns(text: str | None) -> bool:
    """Only a text that says PIVOT or COLUMNS, or has a ``#`` (DuckDB's positional ``#1``),
    can hold them: a tree walk is skipped otherwise."""
    lowered = text.lower() if text is not None else "pivot"
    return "pivot" in lowered or "columns" in lowered or "#" in lowered


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
    resolution: Resolution | None = None  # of the statement's query, for the scope check to reuse


def find_references(statement: exp.Expression, source: str, dialect: str, cache: SchemaCache | Catalog,
                    default_schema: str = "main", placeholders: dict[str, str] | None = None,
                    text: str | None = None) -> SourceRefs:
    """Resolve ``statement`` (original tree, not modified) against the catalog.

    ``placeholders`` maps masked dbt relations (``main._j0``) to what they stand for;
    ``text`` (the statement's file) lets a text search skip a tree walk for PIVOT/``COLUMNS(``.
    """
    catalog = cache if isinstance(cache, Catalog) else Catalog(cache, default_schema)
    sources = {source} | {p for p, relation in (placeholders or {}).items() if relation == source}

    def is_source(table: exp.Table) -> bool:
        return catalog.dataset(table) in sources

    refs = SourceRefs()
    query, _ = split_statement(statement)
    if query is None:
        if any(is_source(t) for t in statement.find_all(exp.Table)):
            raise UnsupportedReference(f"{statement.key.upper()} statements are not rewritten by rules")
        return refs
    if maybe_pivot_or_columns(text) and any(is_source(t) for t in query.find_all(exp.Table)):
        if query.find(exp.Pivot, exp.Columns):
            raise UnsupportedReference("PIVOT or COLUMNS(...) over the source: which columns it "
                                       "reads depends on the data or a pattern; not rewritten by rules")
        positional = query.find(exp.PositionalColumn)
        if positional is not None:
            raise UnsupportedReference(f"`{positional.sql('duckdb')}` reads a column of the source by "
                                       "position, which the target does not keep; name the column")
    try:
        resolution = Resolution(query, catalog, dialect)
    except Unresolved as exc:
        raise UnsupportedReference(f"cannot resolve columns: {exc}") from None
    refs.resolution = resolution
    _collect_tables(resolution, is_source, refs)
    if not refs.tables:
        return refs
    _collect_columns(resolution, refs)
    _collect_stars(resolution, is_source, catalog, refs)
    _check_using(resolution, refs)
    return refs


def _collect_tables(resolution: Resolution, is_source, refs: SourceRefs) -> None:
    seen: set[int] = set()
    for scope in resolution.scopes:
        for node in scope.sources.values():
            if isinstance(node, exp.Table) and id(node) not in seen and is_source(node):
                seen.add(id(node))
                refs.tables.append(TableRef(node, node.alias or None))


def _collect_columns(resolution: Resolution, refs: SourceRefs) -> None:
    tables = {id(t.node): t for t in refs.tables}
    counts: dict[int, int] = {}
    for column, ref in resolution.refs:
        table_ref = tables.get(id(ref.source)) if ref.kind == SOURCE else None
        if table_ref is None:
            continue  # another table, a CTE's or derived table's output, an alias, USING's merge
        if column.table and table_ref.alias is None:
            table_ref.qualified_by_name = True
        # Unqualified, it must say which table once several could have the new name.
        if id(ref.own) not in counts:
            counts[id(ref.own)] = len(resolution.sources(ref.own))
        multi = counts[id(ref.own)] > 1 or ref.hops > 0
        refs.columns.append(ColumnRef(
            node=column, column=column.name.lower(), source_alias=ref.name,
            needs_qualifier=not column.table and multi, bare_projection=_is_bare_projection(column)))


def rows_ignore_projections(select: exp.Select) -> bool:
    """Leaving a column out of this SELECT's list cannot change its rows (no DISTINCT,
    GROUP BY or set operation, where every listed column counts)."""
    return not (select.args.get("distinct") or select.args.get("group")
                or isinstance(select.parent, exp.SetOperation))


def _is_bare_projection(column: exp.Column) -> bool:
    return isinstance(column.parent, exp.Select) and column.arg_key == "expressions"


def _collect_stars(resolution: Resolution, is_source, catalog: Catalog, refs: SourceRefs) -> None:
    for scope in resolution.scopes:
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
                node = _source_named(scope, name)
                columns = _columns_of(node, catalog)
                if columns is None:
                    if _touches(node, is_source):
                        raise UnsupportedReference(f"cannot expand `{projection.sql()}`: the columns "
                                                   f"of {name} are unknown")
                    expansion = None
                    break
                from_source = isinstance(node, exp.Table) and is_source(node)
                excluded = star_excluded(star)
                expansion.extend((name, c, from_source) for c in columns if c.lower() not in excluded)
            if expansion and any(s for _, _, s in expansion):
                refs.stars.append(StarRef(node=projection, expansion=expansion,
                                          qualify_all=len(names) > 1,
                                          internal=scope.is_cte or scope.is_derived_table))


def _source_named(scope: Scope | None, name: str):
    name = name.lower()
    while scope is not None:
        for key, node in scope.sources.items():
            if key.lower() == name:
                return node
        scope = scope.parent
    return None


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


def _columns_of(node, catalog: Catalog) -> list[str] | None:
    """The columns a ``*`` lists, as the catalog spells them; None when unknown (a derived
    table that itself selects ``*`` counts as unknown: its list is not spelled out)."""
    if isinstance(node, exp.Table):
        name = catalog.dataset(node)
        schemas = catalog.cache.schemas
        return list(schemas[name]) if name in schemas else None
    if isinstance(node, Scope):
        names = node.expression.named_selects if hasattr(node.expression, "named_selects") else []
        return None if any(n == "*" for n in names) else [n.lower() for n in names]
    return None


def _touches(node, is_source) -> bool:
    if isinstance(node, exp.Table):
        return is_source(node)
    if isinstance(node, Scope):
        return any(is_source(t) for t in node.expression.find_all(exp.Table))
    return False


def nested_using_join(query: exp.Expression) -> exp.Join | None:
    """A USING or NATURAL join that sqlglot attaches to a table rather than to the SELECT
    (``FROM (a JOIN b USING (k))``, DuckDB's ``FROM a JOIN b USING (k) SELECT ...``): the
    rules and the scope check read a SELECT's own joins only."""
    for table in query.find_all(exp.Table):
        for join in table.args.get("joins") or []:
            if join.args.get("using") or join.method == "NATURAL":
                return join
    return None


def _check_using(resolution: Resolution, refs: SourceRefs) -> None:
    """Columns joined with USING in a query that reads the source: the merged column
    has no single table, so a renamed one cannot be spliced (``map_columns`` escalates)."""
    nested = nested_using_join(resolution.root.expression) if resolution.root else None
    if nested is not None:
        raise UnsupportedReference(f"`{nested.sql()}` joins inside parentheses or before SELECT "
                                   "(FROM-first): not rewritten by rules; write SELECT ... FROM ... JOIN")
    for scope in resolution.scopes:
        select = scope.expression
        for join in select.args.get("joins") or [] if isinstance(select, exp.Select) else []:
            if join.args.get("using"):
                refs.using_joins.append(join)
            for ident in join.args.get("using") or []:
                refs.using_columns.append(ident.name.lower())


__all__ = ["find_references", "SourceRefs", "TableRef", "ColumnRef", "StarRef",
           "UnsupportedReference"]
