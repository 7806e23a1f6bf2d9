"""Which source every column of a query reads, found without rewriting the query.

sqlglot's ``qualify`` answers this by rewriting an analysis copy (it quotes identifiers,
expands ``*``, turns USING into ON) at about three times the cost of parsing. The rules and
the scope check run on every consumer and only need, per column node, the FROM/JOIN source
it reads, so ``resolve`` walks sqlglot's scopes once and looks names up as ``qualify`` does:

- ``t.c``: ``t`` is a source of the column's scope, or of an enclosing one (correlated);
- ``c``: the one source that has it (catalog schemas for tables; outputs of derived tables
  and CTEs, ``*`` included), else a projection alias, else an enclosing scope's source;
- ORDER BY / DISTINCT ON names of output columns, and HAVING / QUALIFY names by the
  dialect's precedence, are projection aliases; USING's merged column is its own kind.

A name two sources have, or that a source with unknown columns might have, raises
``Unresolved``: callers escalate rather than guess.

>>> catalog = Catalog({"a.p": {"user_id": "INT", "ms": "INT"}, "a.u": {"user_id": "INT", "plan": "TEXT"}})
>>> res = resolve(sqlglot.parse_one(
...     "SELECT ms, plan, p.user_id AS uid FROM a.p AS p JOIN a.u AS u ON u.user_id = p.user_id "
...     "ORDER BY uid"), catalog)
>>> [(c.sql(), r.kind, r.name) for c, r in res.refs]  # doctest: +NORMALIZE_WHITESPACE
[('ms', 'source', 'p'), ('plan', 'source', 'u'), ('p.user_id', 'source', 'p'),
 ('u.user_id', 'source', 'u'), ('p.user_id', 'source', 'p'), ('uid', 'alias', 'uid')]
>>> resolve(sqlglot.parse_one("SELECT user_id FROM a.p, a.u"), catalog)
Traceback (most recent call last):
skein.rewrite.resolve.Unresolved: ambiguous column 'user_id' (line 1): a.p, a.u have it
>>> resolve(sqlglot.parse_one("SELECT x FROM a.p, a.nowhere"), catalog)
Traceback (most recent call last):
skein.rewrite.resolve.Unresolved: cannot place 'x' (line 1): the columns of a.nowhere are unknown
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import sqlglot  # noqa: F401 - the doctest above uses it
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.scope import Scope, traverse_scope

from skein.lineage import SchemaCache

SOURCE, ALIAS, USING = "source", "alias", "using"
_CONTEXT = (exp.Select, exp.Qualify, exp.Order, exp.Cluster, exp.Having, exp.Hint, exp.Table,
            exp.Star, exp.Distinct)


class Unresolved(Exception):
    """A column the catalog cannot attribute to exactly one source."""


class Ref(NamedTuple):
    """What one column node reads."""

    kind: str  # SOURCE, ALIAS (a projection of its own SELECT) or USING (a merged column)
    scope: Scope  # SOURCE/USING: the scope whose FROM/JOIN provides it; ALIAS: its own
    name: str  # SOURCE: the source's name there (alias or table), lowercase; else the column
    source: exp.Table | Scope | None  # SOURCE: the scope's source (a table, or a CTE's scope)
    hops: int  # enclosing scopes crossed to find it (correlated subqueries)
    own: Scope  # the scope the column is written in


class Source(NamedTuple):
    key: str  # the name as sqlglot's scope has it (alias or table name)
    node: exp.Expression  # the FROM/JOIN node
    source: exp.Table | Scope
    columns: tuple[str, ...] | None  # lowercase, in order; None: unknown
    names: frozenset[str] | None


class Catalog:
    """The catalog's columns by ``schema.table``, looked up case-insensitively."""

    def __init__(self, schemas: dict | SchemaCache, default_schema: str = "main"):
        self.cache = schemas if isinstance(schemas, SchemaCache) else SchemaCache.shared(schemas)
        self.default_schema = default_schema

    def dataset(self, table: exp.Table) -> str:
        """``schema.table``, lowercase; the catalog part is ignored, a bare name is in the default schema."""
        return f"{(table.db or self.default_schema).lower()}.{table.name.lower()}"

    def columns(self, table: exp.Table) -> tuple[str, ...] | None:
        return self.cache.lowercase().get(self.dataset(table))


class Resolution:
    """Every column of one query with what it reads (``refs``, in scope order)."""

    def __init__(self, query: exp.Expression, catalog: Catalog, dialect: str | Dialect | None = None):
        self.catalog = catalog
        self.dialect = dialect if isinstance(dialect, Dialect) else _dialect(dialect)
        try:
            self.scopes: list[Scope] = traverse_scope(query)
        except OptimizeError as exc:
            raise Unresolved(str(exc)) from None
        self.root = self.scopes[-1] if self.scopes else None
        self._swaps: dict[int, tuple[str, tuple[str, ...]]] = {}
        self._clear()
        self.refs: list[tuple[exp.Column, Ref]] = []
        for scope in self.scopes:
            self._resolve_scope(scope)

    def _clear(self) -> None:
        self._heres: dict[int, _Here] = {}
        self._sources: dict[int, dict[str, Source]] = {}
        self._outputs: dict[int, tuple[str, ...] | None] = {}
        self._using: dict[int, dict[str, str]] = {}

    def swapped(self, swaps: dict[int, tuple[str, tuple[str, ...]]]) -> "Resolution":
        """The same scopes, with some table sources (by node id) known under another name
        and with other columns: the patched query, where a table now reads the target.
        Columns are resolved on demand (``column``), not up front."""
        view = object.__new__(Resolution)
        view.catalog, view.dialect, view.scopes, view.root = self.catalog, self.dialect, self.scopes, self.root
        view._swaps = swaps
        view._clear()
        view.refs = []
        return view

    def name_at(self, scope: Scope, place: exp.Column, qualifier: str | None, name: str) -> Ref | None:
        """What ``qualifier.name`` would read written where the column node ``place`` is
        (its clause decides between projection aliases and sources, as for ``place``)."""
        if qualifier:
            return self._qualified(scope, place, name.lower(), qualifier.lower())
        here = self._heres.get(id(scope))
        if here is None:
            here = self._heres[id(scope)] = self._here(scope)
        return self._unqualified(here, place, name.lower())

    # -- sources -------------------------------------------------------------------------
    def sources(self, scope: Scope) -> dict[str, Source]:
        """The scope's FROM/JOIN sources by lowercase name, in the order they are written."""
        found = self._sources.get(id(scope))
        if found is None:
            try:
                selected = scope.selected_sources
            except OptimizeError as exc:
                raise Unresolved(str(exc)) from None
            found = {}
            for key, (node, source) in selected.items():
                swap = self._swaps.get(id(source))
                if swap is not None:  # this table reads the target now: its name and columns
                    key, columns = swap
                    found[key.lower()] = Source(key, node, source, columns, frozenset(columns))
                else:
                    found[key.lower()] = self._source(key, node, source)
            for key, source in scope.lateral_sources.items():
                found.setdefault(key.lower(), self._source(key, source.expression, source))
            self._sources[id(scope)] = found
        return found

    def _source(self, key: str, node, source) -> Source:
        if isinstance(source, Scope):
            columns = self.outputs(source)
            outer = source.expression.parent  # CTE or Subquery: column aliases live there
            aliases = outer.alias_column_names if isinstance(outer, (exp.CTE, exp.Subquery)) else []
        else:
            columns = None if isinstance(source.this, exp.Func) else self.catalog.columns(source)
            aliases = source.alias_column_names
        if aliases:  # t(a, b): the aliases rename the first columns
            aliases = [a.lower() for a in aliases]
            columns = tuple(a or c for a, c in itertools.zip_longest(aliases, columns or ())) \
                if columns is not None or isinstance(source, exp.Table) else None
        return Source(key, node, source, columns, frozenset(columns) if columns is not None else None)

    def outputs(self, scope: Scope) -> tuple[str, ...] | None:
        """Output column names of a derived table, CTE or subquery (None: unknown)."""
        if id(scope) in self._outputs:
            return self._outputs[id(scope)]
        self._outputs[id(scope)] = None  # a recursive CTE reading itself: unknown
        expression = scope.expression
        names: list[str] | None = []
        if isinstance(expression, exp.SetOperation):
            left = self.outputs(scope.set_operation_scopes[0]) if scope.set_operation_scopes else None
            names = list(left) if left is not None else None
        elif isinstance(expression, exp.Select):
            for projection in expression.expressions:
                if projection.is_star:
                    expanded = self.star_columns(scope, projection)
                    if expanded is None:
                        names = None
                        break
                    names.extend(column for _, column in expanded)
                else:
                    names.append(projection.output_name.lower())
        else:  # VALUES, UNNEST, table functions: their alias names the columns, if any
            aliases = expression.alias_column_names if isinstance(expression, exp.Expression) else []
            names = [a.lower() for a in aliases] or None
        result = tuple(names) if names is not None else None
        self._outputs[id(scope)] = result
        return result

    def star_columns(self, scope: Scope, projection: exp.Expression) -> list[tuple[str, str]] | None:
        """``(source name, column)`` a ``*`` / ``t.*`` projection outputs (None: unknown)."""
        star = projection.this if isinstance(projection, exp.Column) else projection
        excluded = {c.name.lower() for c in star.args.get("except_") or star.args.get("except") or []}
        sources = self.sources(scope)
        qualifier = projection.table.lower() if isinstance(projection, exp.Column) else None
        names = [qualifier] if qualifier else list(sources)
        merged = set(self.using(scope)) if not qualifier else set()
        expanded = []
        for name in names:
            source = sources.get(name)
            if source is None or source.columns is None:
                return None
            for column in source.columns:
                if column in excluded or (column in merged and any(c == column for _, c in expanded)):
                    continue  # USING's merged column is output once
                expanded.append((name, column))
        return expanded

    def using(self, scope: Scope) -> dict[str, str]:
        """USING columns of the scope's joins -> the source name whose value the merged column
        takes in inner and left joins: the first source on the left that has the column."""
        found = self._using.get(id(scope))
        if found is None:
            found = {}
            select = scope.expression
            joins = select.args.get("joins") if isinstance(select, exp.Select) else None
            if joins and any(j.args.get("using") for j in joins):
                sources = self.sources(scope)
                left = [select.args["from_"].alias_or_name.lower()] if select.args.get("from_") else []
                for join in joins:
                    right = sources.get(join.alias_or_name.lower())
                    for ident in join.args.get("using") or []:
                        name = ident.name.lower()
                        owner = next((s for s in left if sources.get(s) and sources[s].names
                                      and name in sources[s].names), None)
                        known = all(sources.get(s) and sources[s].names is not None for s in left)
                        if (owner is None and known) or (right and right.names is not None and name not in right.names):
                            raise Unresolved(f"USING ({ident.name}): a side of the join has no such column")
                        found.setdefault(name, owner or (left[-1] if left else ""))
                    left.append(join.alias_or_name.lower())
            self._using[id(scope)] = found
        return found

    # -- columns -------------------------------------------------------------------------
    def _here(self, scope: Scope) -> "_Here":
        select = scope.expression if isinstance(scope.expression, exp.Select) else None
        projections = select.expressions if select is not None else []
        return _Here(scope, self.sources(scope), self.using(scope),
                     {p.alias.lower(): p.this for p in projections if isinstance(p, exp.Alias)},
                     {p.output_name.lower() for p in projections})

    def _resolve_scope(self, scope: Scope) -> None:
        if isinstance(scope.expression, exp.Select) and any(
                j.method == "NATURAL" for j in scope.expression.args.get("joins") or []):
            raise Unresolved("NATURAL JOIN: which columns it merges is not resolved; write USING or ON")
        here = self._here(scope)
        refs = self.refs
        for column in scope._raw_columns:  # noqa: SLF001 - the scope's own columns, in order
            table = column.args.get("table")
            if table is not None:  # the common case first: t.c
                ref = self._qualified(scope, column, column.name.lower(), table.name.lower(), here.sources)
            else:
                ref = self._unqualified(here, column, column.name.lower())
            if ref is not None:
                refs.append((column, ref))

    def _unqualified(self, here: "_Here", column: exp.Column, name: str) -> Ref | None:
        scope = here.scope
        context = column.find_ancestor(*_CONTEXT)
        if context is None or type(context) is exp.Select:
            pass  # a plain read: SELECT list, WHERE, JOIN ... ON, GROUP BY, function arguments
        elif isinstance(context, exp.Star):  # a name in EXCLUDE/EXCEPT is not a read
            if column.arg_key in ("except_", "except"):
                return None
        elif isinstance(context, exp.Hint):
            return None
        elif isinstance(context, (exp.Order, exp.Cluster, exp.Distinct)):
            # ORDER BY / DISTINCT ON a name the query outputs: that output column.
            if isinstance(context.parent, exp.SetOperation):
                if name not in (self.outputs(scope) or ()):
                    raise Unresolved(f"column '{column.name}'{_where(column)} is not an output of the "
                                     "set operation it orders")
                return Ref(ALIAS, scope, name, None, 0, scope)
            if isinstance(context.parent, exp.Select) and name in here.outputs:
                return Ref(ALIAS, scope, name, None, 0, scope)
        elif isinstance(context, (exp.Having, exp.Qualify)):
            return self._having(here, column, name, context)
        if name in here.using:
            return Ref(USING, scope, name, None, 0, scope)
        if name in here.aliases and isinstance(column.parent, exp.Group) and \
                self.dialect.FORCE_EARLY_ALIAS_REF_EXPANSION:
            return Ref(ALIAS, scope, name, None, 0, scope)  # BigQuery: GROUP BY <alias> is the alias
        hit = self._one(column, *self._hits(here.sources, scope, column, name))
        if hit is not None:
            return Ref(SOURCE, scope, hit.key.lower(), hit.source, 0, scope)
        if name in here.aliases:  # a projection alias used in WHERE, GROUP BY or a later projection
            return Ref(ALIAS, scope, name, None, 0, scope)
        return self._outer(scope, column, name)

    def _having(self, here: "_Here", column: exp.Column, name: str, context) -> Ref:
        """HAVING and QUALIFY see both the sources and the projections; the dialect decides."""
        scope = here.scope
        alias = here.aliases.get(name)
        hits, unknown = self._hits(here.sources, scope, column, name)
        if len(hits) > 1 and alias is not None:
            return Ref(ALIAS, scope, name, None, 0, scope)  # no single column: the alias is meant
        hit = self._one(column, hits, unknown)
        if hit is not None and alias is not None:
            in_aggregate = isinstance(column.find_ancestor(exp.AggFunc, exp.Window, type(context)), exp.AggFunc)
            prefer_column = self.dialect.PREFER_COLUMNS_TO_ALIASES_IN_HAVING_AND_QUALIFY
            if isinstance(context, exp.Having) and self.dialect.HAVING_ALIASES_SHADOW_UNGROUPED_COLUMNS:
                prefer_column = in_aggregate or self._grouped(scope, hit, name)
            if not (prefer_column or (in_aggregate and alias.find(exp.AggFunc))):
                return Ref(ALIAS, scope, name, None, 0, scope)
        if hit is not None:
            return Ref(SOURCE, scope, hit.key.lower(), hit.source, 0, scope)
        if alias is not None:
            return Ref(ALIAS, scope, name, None, 0, scope)
        if name in here.using:
            return Ref(USING, scope, name, None, 0, scope)
        return self._outer(scope, column, name)

    def _grouped(self, scope: Scope, hit: Source, name: str) -> bool:
        group = scope.expression.args.get("group")
        projections = scope.expression.expressions
        for grouping in group.expressions if group else []:
            if isinstance(grouping, exp.Literal) and grouping.is_int and \
                    0 < int(grouping.name) <= len(projections):
                grouping = projections[int(grouping.name) - 1].unalias()
            if isinstance(grouping, exp.Column) and grouping.name.lower() == name and \
                    grouping.table.lower() in ("", hit.key.lower()):
                return True
        return False

    def _qualified(self, scope: Scope, column: exp.Column, name: str, qualifier: str,
                   sources: dict[str, Source] | None = None) -> Ref:
        current, hops = scope, 0
        while current is not None:
            source = (sources if hops == 0 and sources is not None else self.sources(current)).get(qualifier) \
                or self._unselected(current, qualifier)
            if source is not None:
                if source.names is not None and name not in source.names:
                    raise Unresolved(f"unknown column {column.sql()}{_where(column)}: {_label(source)} has no {name}")
                return Ref(SOURCE, current, qualifier, source.source, hops, scope)
            if not current.can_be_correlated:
                break
            current, hops = current.parent, hops + 1
        raise Unresolved(f"column {column.sql()}{_where(column)}: no source named {column.table}")

    def _unselected(self, scope: Scope, qualifier: str) -> Source | None:
        """A source the scope knows but does not select from (a SEMI/ANTI join's table)."""
        for key, source in scope.sources.items():
            if key.lower() == qualifier and key in scope.semi_or_anti_join_tables:
                return self._source(key, source, source)
        return None

    def _hits(self, sources: dict[str, Source], scope: Scope, column: exp.Column, name: str,
              inner: bool = True) -> tuple[list[Source], list[Source]]:
        """Sources that have ``name``, and sources whose columns are unknown."""
        hits, unknown = [], []
        for source in sources.values():
            if source.names is None:
                unknown.append(source)
            elif name in source.names:
                hits.append(source)
        if len(hits) > 1 and inner:
            hits = self._joined_so_far(scope, column, name) or hits
        return hits, unknown

    @staticmethod
    def _one(column: exp.Column, hits: list[Source], unknown: list[Source]) -> Source | None:
        if len(hits) > 1:
            raise Unresolved(f"ambiguous column '{column.name}'{_where(column)}: "
                             f"{', '.join(_label(s) for s in hits)} have it")
        if hits:
            return hits[0]
        if unknown:
            raise Unresolved(f"cannot place '{column.name}'{_where(column)}: the columns of "
                             f"{', '.join(_label(s) for s in unknown)} are unknown")
        return None

    def _joined_so_far(self, scope: Scope, column: exp.Column, name: str) -> list[Source]:
        """In a JOIN's ON, only the sources joined up to there can be meant."""
        join = column.find_ancestor(exp.Join, exp.Select)
        select = scope.expression
        if not isinstance(join, exp.Join) or join.parent is not select or not select.args.get("from_"):
            return []
        sources = self.sources(scope)
        names = [select.args["from_"].alias_or_name.lower()]
        for other in select.args.get("joins") or []:
            names.append(other.alias_or_name.lower())
            if other is join:
                break
        return [sources[n] for n in names if n in sources and sources[n].names and name in sources[n].names]

    def _outer(self, scope: Scope, column: exp.Column, name: str) -> Ref:
        """A name none of the scope's sources has: an enclosing scope's (correlated subquery)."""
        current, hops = scope, 0
        while current.can_be_correlated and current.parent is not None:
            current, hops = current.parent, hops + 1
            if name in self.using(current):
                return Ref(USING, current, name, None, hops, scope)
            hit = self._one(column, *self._hits(self.sources(current), current, column, name, inner=False))
            if hit is not None:
                return Ref(SOURCE, current, hit.key.lower(), hit.source, hops, scope)
        raise Unresolved(f"column '{column.name}'{_where(column)} is in none of the sources")


class _Here(NamedTuple):
    """One scope's lookups, computed once for all its columns."""

    scope: Scope
    sources: dict[str, Source]
    using: dict[str, str]
    aliases: dict[str, exp.Expression]  # projection alias -> its expression
    outputs: set[str]  # output column names


@functools.lru_cache(maxsize=64)
def _dialect(name: str | None) -> Dialect:
    return Dialect.get_or_raise(name)


def resolve(query: exp.Expression, catalog: Catalog, dialect: str | None = None) -> Resolution:
    """Resolve every column of ``query`` (not modified); raises ``Unresolved``."""
    return Resolution(query, catalog, dialect)


def _where(column: exp.Column) -> str:
    line = column.this.meta.get("line") if isinstance(column.this, exp.Identifier) else None
    return f" (line {line})" if line else ""


def _label(source: Source) -> str:
    if isinstance(source.source, exp.Table) and source.source.db:
        return f"{source.source.db}.{source.source.name}".lower()
    return source.key


__all__ = ["ALIAS", "Catalog", "Ref", "Resolution", "SOURCE", "Source", "USING", "Unresolved", "resolve"]
