"""The scope check's comparison form of a statement: what it reads, not how it is written.

Both versions of a consumer are brought to this form in place (the check owns the trees),
then compared node for node with sqlglot's structural hash (case-insensitive, comments
ignored), which costs one pass over each tree:

- every FROM/JOIN source of every scope is renamed by position (``_0``, ``_1``, ...) and
  every column that reads a source is qualified with that name (``skein.rewrite.resolve``);
- the new version is *un-migrated*: the target table becomes the source, each campaign
  expression over target columns the old column;
- ``*`` becomes its column list, USING an ON join whose merged column is the left side's
  (inner and left joins), ``x AS x`` a bare ``x``, and what EXISTS selects ``1``;
- in the old version, a CTE or derived table stops selecting a dropped column when its
  rows cannot depend on it (the rules leave such a column out of an expanded ``*``).

>>> import sqlglot
>>> from skein.rewrite.testing import example_request
>>> req = example_request("", {"user_id": "account_id"})
>>> catalog = Catalog(req.schemas)
>>> def form(sql, side):
...     tree = sqlglot.parse_one(sql)
...     canonicalize(tree, tree, Resolution(tree, catalog, "duckdb"), Migration.of(req), side)
...     return tree.sql()
>>> form("SELECT user_id FROM analytics.plays p", "old")
'SELECT _0.user_id FROM analytics.plays AS _0'
>>> form("SELECT x.account_id AS user_id FROM analytics_v2.plays AS x", "new")
'SELECT _0.user_id FROM analytics.plays AS _0'
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from skein.rewrite.request import RewriteRequest
from skein.rewrite.references import rows_ignore_projections
from skein.rewrite.resolve import SOURCE, USING, Catalog, Resolution  # noqa: F401 - Catalog: the doctest


class Unverifiable(Exception):
    """A statement the check cannot prove anything about: the patch is rejected."""


@dataclass(frozen=True)
class Migration:
    """What un-migrating needs from the request."""

    source: str
    target: str
    dialect: str
    patterns: tuple[tuple[str, str], ...]  # campaign expression -> old column
    columns_dialect: str
    dropped: frozenset[str]
    keeps: frozenset[str]  # source columns that stay as they are (same name in the target)
    thorough: bool = False  # parentheses and quoting ignored everywhere (the slow retry)

    @classmethod
    def of(cls, request: RewriteRequest, thorough: bool = False) -> "Migration":
        columns = {c.lower(): e for c, e in request.columns.items()}
        patterns = tuple((e, old) for old, e in columns.items() if e is not None)
        return cls(source=request.source, target=request.target, dialect=request.dialect,
                   patterns=patterns, columns_dialect=request.columns_dialect,
                   dropped=frozenset(c for c, e in columns.items() if e is None),
                   keeps=frozenset(c.lower() for c in request.source_columns
                                   if (columns.get(c.lower(), c) or "").strip().lower() == c.lower()),
                   thorough=thorough)


@functools.lru_cache(maxsize=4096)
def campaign_pattern(expression: str, read: str, write: str, thorough: bool,
                     name: str) -> tuple[exp.Expression, int]:
    """A campaign expression as the rules write it into the consumer's dialect, its columns
    qualified with ``name``; and how far above its deepest column its root is. Shared: the
    positional names repeat across consumers. Never changed (only compared)."""
    text = expression.strip() if read == write else sqlglot.transpile(expression, read=read, write=write)[0]
    pattern = sqlglot.parse_one(text, read=write)
    pattern = strip_cosmetics(pattern) if thorough else pattern
    for column in pattern.find_all(exp.Column):
        column.set("table", exp.Identifier(this=name))
        _lowercase(column)
    return pattern, _depth(pattern)


def strip_cosmetics(tree: exp.Expression) -> exp.Expression:
    """No parentheses, no quoting, lowercase names (the thorough comparison's normal form)."""
    for ident in tree.find_all(exp.Identifier):
        ident.set("quoted", False)
        ident.set("this", ident.this.lower())
    for paren in list(tree.find_all(exp.Paren)):
        paren.replace(paren.this)
    return tree.this if isinstance(tree, exp.Paren) else tree


def canonicalize(tree: exp.Expression, query: exp.Expression, resolution: Resolution,
                 migration: Migration, side: str) -> list[str]:
    """Bring ``query`` (inside ``tree``) to the comparison form in place; returns its output
    column names ('' for an expression the engine names). ``side`` is "old" or "new"."""
    migrated = migration.source if side == "old" else migration.target
    names = _source_names(resolution)
    catalog = resolution.catalog
    migrated_tables = {id(t) for scope in resolution.scopes for t in scope.sources.values()
                       if isinstance(t, exp.Table) and catalog.dataset(t) == migrated}
    _blank_exists(resolution)
    _tables(resolution, migration, side)
    migrated_columns = _columns(resolution, names, migrated_tables)
    _using_to_on(resolution, names)
    migrated_columns += _expand_stars(resolution, names, migrated_tables)
    outputs = _output_names(query)  # as the engine names them: before un-migrating
    if side == "old":
        _without_internal_dropped(resolution, migration, {names[(id(scope), key)]
                                                          for scope in resolution.scopes
                                                          for key, s in resolution.sources(scope).items()
                                                          if id(s.source) in migrated_tables})
        for column, _ in migrated_columns:
            _unwrap_parens(column)
    else:
        _unmigrate(migrated_columns, migration)
    _unalias(resolution)
    return outputs


def _source_names(resolution: Resolution) -> dict[tuple[int, str], str]:
    """Positional names for every scope's sources; the nodes are renamed too."""
    names = {}
    for scope in resolution.scopes:
        for key, source in resolution.sources(scope).items():
            name = f"_{len(names)}"
            node = source.node  # None: a LATERAL subquery's view of an outer table
            holder = node if isinstance(node, exp.Table) else \
                node.parent if node is not None and isinstance(node.parent, exp.Subquery) else None
            if holder is None:
                name = key  # UNNEST, table functions: their alias may name a column too; kept
            else:
                alias = holder.args.get("alias")
                if alias is not None:
                    alias.set("this", exp.Identifier(this=name))
                else:
                    holder.set("alias", exp.TableAlias(this=exp.Identifier(this=name)))
            names[(id(scope), key)] = name
    return names


def _blank_exists(resolution: Resolution) -> None:
    """What EXISTS (SELECT ...) selects is never read: compare it as SELECT 1 (unless an
    aggregate makes EXISTS always true, then what it selects matters)."""
    for scope in resolution.scopes:
        select = scope.expression
        if isinstance(select, exp.Select) and isinstance(select.parent, exp.Exists) and \
                not any(p.find(exp.AggFunc) for p in select.expressions):
            select.set("expressions", [exp.Literal.number(1)])


def _tables(resolution: Resolution, migration: Migration, side: str) -> None:
    """Catalog parts go (Skein ignores them); the migrated table is spelled as the source."""
    db, _, table = migration.source.rpartition(".")
    renamed = {migration.source, migration.target}
    for scope in resolution.scopes:
        for node in scope.sources.values():
            if not isinstance(node, exp.Table):
                continue
            if node.args.get("catalog") is not None:
                node.set("catalog", None)
            if resolution.catalog.dataset(node) in renamed:
                node.set("db", exp.Identifier(this=db))
                node.set("this", exp.Identifier(this=table))


def _columns(resolution: Resolution, names, migrated_tables: set[int]) -> list[tuple[exp.Column, str]]:
    """Qualify every column that reads a source with the source's positional name; returns
    the columns of the migrated table with that name."""
    migrated = []
    for column, ref in resolution.refs:
        if ref.kind == SOURCE:
            name = names.get((id(ref.scope), ref.name), ref.name)
            if id(ref.source) in migrated_tables:
                migrated.append((column, name))
        elif ref.kind == USING and not _right_or_full(ref.scope):
            owner = resolution.using(ref.scope)[ref.name]
            name = names.get((id(ref.scope), owner), owner)
        else:
            continue
        column.set("table", exp.Identifier(this=name))
        if column.args.get("db") is not None:
            column.set("db", None)
            column.set("catalog", None)
        _lowercase(column)
    return migrated


def _column(name: str, table: str) -> exp.Column:
    """``table.name`` (``exp.column`` would parse both names: slower, same node)."""
    return exp.Column(this=exp.Identifier(this=name), table=exp.Identifier(this=table))


def _lowercase(column: exp.Column) -> None:
    """Names compare case-insensitively (Skein's rule everywhere); sqlglot's node hash does not."""
    ident = column.this
    if isinstance(ident, exp.Identifier) and (ident.args.get("quoted") or ident.this != ident.this.lower()):
        column.set("this", exp.Identifier(this=ident.this.lower()))


def _right_or_full(scope: Scope) -> bool:
    joins = scope.expression.args.get("joins") or []
    return any((j.side or "").upper() in ("RIGHT", "FULL") for j in joins)


def _using_to_on(resolution: Resolution, names) -> None:
    """``JOIN u USING (c)`` is ``JOIN u ON <left>.c = u.c``: how the rules write it."""
    for scope in resolution.scopes:
        owners = resolution.using(scope)
        if not owners:
            continue
        for join in scope.expression.args.get("joins") or []:
            using = join.args.get("using")
            if not using:
                continue
            right = join.alias_or_name.lower()
            conditions = []
            for ident in using:
                column = ident.name.lower()
                left = owners[column]
                conditions.append(exp.EQ(
                    this=_column(column, names.get((id(scope), left), left)),
                    expression=_column(column, names.get((id(scope), right), right))))
            join.set("using", None)
            join.set("on", exp.and_(*conditions, copy=False))


def _expand_stars(resolution: Resolution, names, migrated_tables: set[int]) -> list[tuple[exp.Column, str]]:
    """Every ``*`` whose columns are known becomes its list, each column aliased to its own
    name (a target column keeps its target name there, so a ``*`` over the target is not
    mistaken for the source's list). Returns the listed columns of the migrated table."""
    migrated = []
    for scope in resolution.scopes:
        select = scope.expression
        if not isinstance(select, exp.Select) or not any(p.is_star for p in select.expressions):
            continue
        projections = []
        for projection in select.expressions:
            if not projection.is_star:
                projections.append(projection)
                continue
            star = projection.this if isinstance(projection, exp.Column) else projection
            expanded = resolution.star_columns(scope, projection)
            if expanded is None or star.args.get("rename") or (
                    resolution.using(scope) and touches(scope, migrated_tables)):
                if touches(scope, migrated_tables):
                    raise Unverifiable(f"`{projection.sql()}` over {resolution.catalog.dataset(_any_table(scope))}"
                                       " cannot be expanded to compare column lists")
                projections.append(projection)
                continue
            replaced = {a.alias.lower(): a.this for a in star.args.get("replace") or []}
            for key, column in expanded:
                source = resolution.sources(scope)[key]
                node = _column(column, names.get((id(scope), key), key))
                if id(source.source) in migrated_tables:
                    migrated.append((node, node.table))
                value = replaced.get(column, node)
                projections.append(exp.Alias(this=value, alias=exp.Identifier(this=column)))
        select.set("expressions", projections)
    return migrated


def touches(scope: Scope, migrated_tables: set[int]) -> bool:
    """The scope reads the migrated table, directly or through its CTEs and derived tables."""
    return any(id(t) in migrated_tables or isinstance(t, Scope) and touches(t, migrated_tables)
               for t in scope.sources.values())


def _any_table(scope: Scope) -> exp.Table:
    return next((t for t in scope.sources.values() if isinstance(t, exp.Table)), exp.Table())


def _without_internal_dropped(resolution: Resolution, migration: Migration, source_names: set[str]) -> None:
    """A CTE or derived table may stop selecting a dropped column nobody outside uses (the
    rules' ``*`` expansion does): compare without it. Had something used it, the new version
    fails to resolve, which is reported on its own."""
    if not migration.dropped:
        return
    for scope in resolution.scopes:
        select = scope.expression
        if not (scope.is_cte or scope.is_derived_table) or not isinstance(select, exp.Select) or \
                not rows_ignore_projections(select):
            continue
        kept = []
        for projection in select.expressions:
            column = projection.this if isinstance(projection, exp.Alias) else projection
            if not (isinstance(column, exp.Column) and column.name.lower() in migration.dropped
                    and column.table in source_names):
                kept.append(projection)
        if len(kept) != len(select.expressions):
            select.set("expressions", kept)


def _unmigrate(columns: list[tuple[exp.Column, str]], migration: Migration) -> None:
    """Each campaign expression over target columns becomes the old column. A target column
    outside any expression must be one the source has under the same name."""
    instances: dict[str, tuple[list[tuple[exp.Expression, str]], int]] = {}
    replaced: set[int] = set()
    for column, name in columns:
        if name not in instances:
            found = [(campaign_pattern(e, migration.columns_dialect, migration.dialect, migration.thorough, name), old)
                     for e, old in migration.patterns]
            instances[name] = ([(p, old) for (p, _), old in found], max((d for (_, d), _ in found), default=0))
        patterns, depth = instances[name]
        best, done = _largest_match(column, patterns, depth, replaced)
        if done:
            continue  # part of an expression already undone
        if best is None:
            if column.name.lower() not in migration.keeps:
                raise Unverifiable(f"reads {migration.target}.{column.name} outside the campaign's "
                                   f"expressions, and {migration.source} has no column of that name")
            _unwrap_parens(column)
            continue
        node, old = best
        named = _projection_name(node)
        original = _column(old, name)
        replaced.add(id(node))
        node.replace(original)
        _unwrap_parens(original)
        if named is not None and named != old:
            # A projection keeps the name it was written with (a CTE's or a derived table's
            # column names are read by name outside), which may not be the old column's.
            wrapper = exp.Alias(alias=exp.Identifier(this=named or "_col"))
            original.replace(wrapper)
            wrapper.set("this", original)


def _largest_match(column: exp.Column, instances, depth: int, replaced: set[int]):
    """The outermost ancestor of ``column`` (itself included) that is a campaign expression,
    so ``duration_s * 1000`` is not half-undone by a pattern for ``duration_s`` alone."""
    node, best = column, None
    for _ in range(depth + 1):
        if node is None:
            break
        if id(node) in replaced:
            return None, True
        for pattern, old in instances:
            if type(pattern) is type(node) and node == pattern:
                best = (node, old)
        node = node.parent
    return best, False


def _projection_name(node: exp.Expression) -> str | None:
    """The output name of ``node`` when it is a whole projection (parentheses aside)."""
    while isinstance(node.parent, exp.Paren):
        node = node.parent
    if isinstance(node.parent, exp.Select) and node.arg_key == "expressions":
        return node.output_name.lower()
    return None


def _depth(pattern: exp.Expression) -> int:
    """How far above its deepest column a pattern's root is."""
    deepest = 0
    for column in pattern.find_all(exp.Column):
        node, level = column, 0
        while node is not pattern:
            node, level = node.parent, level + 1
        deepest = max(deepest, level)
    return deepest


def _unwrap_parens(node: exp.Expression) -> None:
    """Parentheses around one column never mean anything; the rules add them around
    expressions that replace one."""
    while isinstance(node.parent, exp.Paren):
        node.parent.replace(node)


def _unalias(resolution: Resolution) -> None:
    """``x AS x`` is ``x``: a rule's ``account_id AS user_id`` is, un-migrated, ``user_id``."""
    for scope in resolution.scopes:
        select = scope.expression
        if not isinstance(select, exp.Select):
            continue
        for projection in select.expressions:
            if isinstance(projection, exp.Alias) and isinstance(projection.this, exp.Column) and \
                    projection.this.name.lower() == projection.alias.lower():
                projection.replace(projection.this)


def _output_names(query: exp.Expression) -> list[str]:
    while isinstance(query, exp.SetOperation):
        query = query.this
    query = query.unnest() if isinstance(query, exp.Subquery) else query
    return [p.output_name.lower() for p in query.expressions] if isinstance(query, exp.Select) else []
