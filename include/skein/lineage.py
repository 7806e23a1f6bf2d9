"""Column-level lineage of one SQL consumer, resolved with the catalog's schemas.

sqlglot's ``qualify`` resolves every column to its source (aliases, CTEs, USING,
``*``) on an analysis-only tree; we then walk the scopes to find which dataset
columns the consumer *touches* and, for each output column, which dataset
columns its value comes from (docs/discovery.md). ``sqlglot.lineage`` answers
one output column at a time at ~40 ms each; one walk answers all of them.

>>> schema = {"analytics.plays": {"user_id": "INT", "ms": "INT", "country": "TEXT"},
...           "analytics.users": {"user_id": "INT", "country": "TEXT"}}
>>> lin = analyze_sql('''
... WITH p AS (SELECT user_id, ms, country FROM analytics.plays)
... SELECT u.country, SUM(ms) AS total
... FROM p JOIN analytics.users AS u USING (user_id)
... GROUP BY 1''', "duckdb", schema)
>>> sorted(lin.reads["analytics.plays"]), sorted(lin.reads["analytics.users"])
(['ms', 'user_id'], ['country', 'user_id'])
>>> lin.outputs, sorted(lin.output_lineage["total"])
(['country', 'total'], [('analytics.plays', 'ms')])
>>> analyze_sql("SELECT FROM WHERE", "duckdb", schema).error  # doctest: +ELLIPSIS
'does not parse: ...'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope
from sqlglot.schema import MappingSchema

from skein.errors import first_line
from skein.sqlbudget import Deadline, TooComplex, parse

ColumnKey = tuple[str, str]  # (dataset, column)


@dataclass
class Lineage:
    """What one consumer reads and produces. ``error`` set means columns are unknown."""

    reads: dict[str, set[str]] = field(default_factory=dict)  # dataset -> touched columns
    table_lines: dict[str, list[int]] = field(default_factory=dict)
    column_lines: dict[ColumnKey, list[int]] = field(default_factory=dict)
    produces: str | None = None
    outputs: list[str] = field(default_factory=list)
    output_lineage: dict[str, set[ColumnKey]] = field(default_factory=dict)
    error: str | None = None

    def lines_for(self, dataset: str) -> list[int]:
        lines = set(self.table_lines.get(dataset, ()))
        for (ds, _), found in self.column_lines.items():
            if ds == dataset:
                lines.update(found)
        return sorted(lines)


class SchemaCache:
    """One ``MappingSchema`` per dialect: building it is the costly part at 10k datasets."""

    def __init__(self, schemas: dict[str, dict[str, str]]):
        self.schemas = schemas
        self._by_dialect: dict[str, MappingSchema] = {}
        self._lowercase: dict[str, tuple[str, ...]] | None = None

    _shared: dict[tuple, "SchemaCache"] = {}

    _last: tuple[dict, "SchemaCache"] | None = None

    @classmethod
    def shared(cls, schemas: dict[str, dict[str, str]]) -> "SchemaCache":
        """One cache per distinct catalog: the requests of a campaign share their schemas."""
        last = cls._last
        if last is not None and last[0] is schemas:
            return last[1]  # the same dict again (the rule agent, then its scope check)
        key = tuple((name, tuple(columns)) for name, columns in sorted(schemas.items()))
        cache = cls._shared.get(key)
        if cache is None:
            if len(cls._shared) >= 256:
                cls._shared.clear()
            cache = cls._shared[key] = cls(schemas)
        cls._last = (schemas, cache)  # holding the dict keeps its identity from being reused
        return cache

    def lowercase(self) -> dict[str, tuple[str, ...]]:
        """``schema.table`` -> column names, all lowercase: what resolution looks names up in."""
        if self._lowercase is None:
            self._lowercase = {name.lower(): tuple(c.lower() for c in columns)
                               for name, columns in self.schemas.items()}
        return self._lowercase

    def for_dialect(self, dialect: str) -> MappingSchema:
        if dialect not in self._by_dialect:
            nested: dict[str, dict[str, dict[str, str]]] = {}
            for name, columns in self.schemas.items():
                db, _, table = name.rpartition(".")
                # Types are irrelevant to resolution; a placeholder keeps type parsing cheap.
                nested.setdefault(db, {})[table] = {c: "UNKNOWN" for c in columns}
            self._by_dialect[dialect] = MappingSchema(nested, dialect=dialect)
        return self._by_dialect[dialect]


def analyze_sql(sql: str, dialect: str, schemas: dict[str, dict[str, str]] | SchemaCache,
                default_schema: str = "main") -> Lineage:
    """Lineage of every statement in ``sql``; never raises for bad consumer SQL. SQL over
    the parse budget (``skein.sqlbudget``) gets its reason as ``error``, unresolved."""
    cache = schemas if isinstance(schemas, SchemaCache) else SchemaCache(schemas)
    lineage = Lineage()
    deadline = Deadline()
    try:
        statements = [s for s in parse(sql, dialect)[1] if s is not None]
    except TooComplex as exc:
        lineage.error = str(exc)
        return lineage
    except SqlglotError as exc:
        lineage.error = f"does not parse: {first_line(exc)}"
        return lineage
    except Exception as exc:  # noqa: BLE001 - deep nesting, and sqlglot's bare errors on odd input
        lineage.error = f"does not parse: {_unexpected(exc)}"
        return lineage
    if not statements:
        lineage.error = "no SQL statement found"
        return lineage
    try:
        _analyze_statements(statements, dialect, cache, default_schema, lineage, deadline)
    except RecursionError:
        lineage.error = "cannot resolve columns: nested too deeply"
    except TooComplex as exc:
        return Lineage(error=str(exc))  # what was found so far is not the whole story
    return lineage


def _analyze_statements(statements: list[exp.Expression], dialect: str, cache: SchemaCache,
                        default_schema: str, lineage: Lineage, deadline: Deadline) -> None:
    for statement in statements:
        deadline.check("column resolution")
        normalize_names(statement, default_schema)
        _record_tables(statement, lineage)
        query, produces = split_statement(statement)
        if produces:
            lineage.produces = produces
        if query is None:
            if not isinstance(statement, (exp.Create, exp.Drop, exp.Set, exp.Use)) or \
                    lineage.table_lines:
                lineage.error = lineage.error or (
                    f"cannot resolve columns in a {statement.key.upper()} statement")
            continue
        try:
            qualified = qualify(query, dialect=dialect, schema=cache.for_dialect(dialect),
                                db=default_schema, quote_identifiers=False, identify=False,
                                validate_qualify_columns=True)
        except SqlglotError as exc:
            lineage.error = f"cannot resolve columns: {first_line(exc)}"
            continue
        except Exception as exc:  # noqa: BLE001 - sqlglot raises bare errors on odd input
            lineage.error = f"cannot resolve columns: {_unexpected(exc)}"
            continue
        deadline.check("column lineage")
        _ScopeWalk(qualified, lineage).run()


def _unexpected(exc: Exception) -> str:
    """An error sqlglot is not meant to raise, in words.

    >>> _unexpected(RecursionError("maximum recursion depth exceeded")), _unexpected(TypeError("x"))
    ('nested too deeply', 'TypeError: x')
    """
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"{type(exc).__name__}: {first_line(exc)}"


_NAME_PART = r"[\w$`\"\[\]-]"
# A chain starts only where a name starts, and each part is matched atomically: without both,
# a long run of name characters with no dot costs length² (20 KB of one name took 28 s).
_NAME_CHAIN = re.compile(rf"(?<!{_NAME_PART})(?>{_NAME_PART}+)(?:\s*+\.\s*+(?>{_NAME_PART}+))+")


def mentioned_datasets(text: str) -> frozenset[str]:
    """``schema.table`` names a text mentions, for consumers that cannot be parsed.

    >>> sorted(mentioned_datasets('SELEC x FROM `p.Analytics.Plays` JOIN "a" . "b" WHERE'))
    ['a.b', 'analytics.plays']
    """
    found = set()
    for chain in _NAME_CHAIN.findall(text):
        parts = [p.strip("`\"[] ") for p in re.sub(r"\s+", "", chain).replace("`", "").split(".")]
        if len(parts) >= 2 and all(parts[-2:]):
            found.add(f"{parts[-2]}.{parts[-1]}".lower())
    return frozenset(found)


def dataset_name(table: exp.Table) -> str:
    """``schema.table`` of a table reference, lowercased, catalog part dropped.

    >>> dataset_name(sqlglot.parse_one("SELECT 1 FROM `p.Analytics.Plays`", read="bigquery").find(exp.Table))
    'analytics.plays'
    """
    return f"{table.db}.{table.name}".lower() if table.db else table.name.lower()


def normalize_names(statement: exp.Expression, default_schema: str) -> None:
    """Lowercase identifiers and drop catalog parts so names match the catalog.

    Skein compares names case-insensitively in every dialect (docs/discovery.md); doing
    it on the tree keeps the meta (line numbers) of each identifier.
    """
    for ident in statement.find_all(exp.Identifier):
        ident.set("this", ident.this.lower())
        ident.set("quoted", False)
    for table in statement.find_all(exp.Table):
        if table.args.get("catalog") is not None and table.name:
            table.set("catalog", None)


def _record_tables(statement: exp.Expression, lineage: Lineage) -> None:
    ctes = {cte.alias_or_name for cte in statement.find_all(exp.CTE)}
    target = _produced_table(statement)
    for table in statement.find_all(exp.Table):
        if not table.name or table is target or (not table.db and table.name in ctes):
            continue
        if isinstance(table.this, exp.Func):  # table functions: read_csv(...), range(...)
            continue
        name = dataset_name(table)
        lineage.reads.setdefault(name, set())
        line = table.this.meta.get("line")
        if line:
            lineage.table_lines.setdefault(name, []).append(line)


def _produced_table(statement: exp.Expression) -> exp.Table | None:
    if isinstance(statement, (exp.Create, exp.Insert)):
        this = statement.this
        if isinstance(this, exp.Schema):
            this = this.this
        if isinstance(this, exp.Table):
            return this
    return None


def split_statement(statement: exp.Expression) -> tuple[exp.Query | None, str | None]:
    table = _produced_table(statement)
    produces = dataset_name(table) if table is not None else None
    if isinstance(statement, exp.Query):
        return statement, None
    query = statement.expression if isinstance(statement, (exp.Create, exp.Insert)) else None
    return (query if isinstance(query, exp.Query) else None), produces


class _ScopeWalk:
    """Walks the scopes of one qualified query and fills a ``Lineage``."""

    def __init__(self, query: exp.Query, lineage: Lineage):
        self.root = build_scope(query)
        self.lineage = lineage
        self._memo: dict[tuple[int, str], frozenset[ColumnKey]] = {}

    def run(self) -> None:
        if self.root is None:
            return
        for scope in self.root.traverse():
            projections = self._projection_nodes(scope)
            for column in scope.columns:
                if id(column) not in projections or scope.is_subquery:
                    self._touch(self._column_leaves(scope, column))
            self._record_direct_columns(scope)
        names = self._output_names(self.root)
        self.lineage.outputs = names
        for name in names:
            leaves = self._output_leaves(self.root, name)
            self.lineage.output_lineage[name] = set(leaves)
            self._touch(leaves)

    def _touch(self, leaves) -> None:
        for dataset, column in leaves:
            self.lineage.reads.setdefault(dataset, set()).add(column)

    def _record_direct_columns(self, scope: Scope) -> None:
        for column in scope.columns:
            source = self._source(scope, column.table)
            line = column.this.meta.get("line") if isinstance(column.this, exp.Identifier) else None
            if isinstance(source, exp.Table) and line:
                key = (dataset_name(source), column.name.lower())
                self.lineage.column_lines.setdefault(key, []).append(line)

    @staticmethod
    def _projection_nodes(scope: Scope) -> set[int]:
        select = scope.expression
        if not isinstance(select, exp.Select):
            return set()
        return {id(node) for projection in select.expressions for node in projection.walk()}

    def _source(self, scope: Scope | None, alias: str):
        while scope is not None:
            if alias in scope.sources:
                return scope.sources[alias]
            scope = scope.parent
        return None

    def _column_leaves(self, scope: Scope, column: exp.Column) -> frozenset[ColumnKey]:
        if not column.table:
            # An unqualified column after qualify is a reference to a projection alias
            # (e.g. ORDER BY total): it touches what that projection reads.
            return self._output_leaves(scope, column.name) if column.name in \
                self._output_names(scope) else frozenset()
        source = self._source(scope, column.table)
        if isinstance(source, exp.Table):
            return frozenset({(dataset_name(source), column.name.lower())}) if source.name \
                else frozenset()
        if isinstance(source, Scope):
            return self._output_leaves(source, column.name)
        return frozenset()

    def _output_names(self, scope: Scope) -> list[str]:
        expression = scope.expression
        while isinstance(expression, exp.SetOperation):
            expression = expression.this
        if isinstance(expression, exp.Subquery):
            expression = expression.unnest()
        return [name.lower() for name in getattr(expression, "named_selects", [])]

    def _output_leaves(self, scope: Scope, name: str) -> frozenset[ColumnKey]:
        key = (id(scope), name)
        if key in self._memo:
            return self._memo[key]
        self._memo[key] = frozenset()  # guards recursive CTEs
        if isinstance(scope.expression, exp.SetOperation):
            position = self._output_names(scope).index(name) if name in \
                self._output_names(scope) else None
            leaves: set[ColumnKey] = set()
            for branch in scope.set_operation_scopes or ():
                branch_names = self._output_names(branch)
                if position is not None and position < len(branch_names):
                    leaves |= self._output_leaves(branch, branch_names[position])
            result = frozenset(leaves)
        else:
            result = self._projection_leaves(scope, name)
        self._memo[key] = result
        return result

    def _projection_leaves(self, scope: Scope, name: str) -> frozenset[ColumnKey]:
        select = scope.expression
        if not isinstance(select, exp.Select):
            return frozenset()
        projection = next((p for p in select.expressions if p.alias_or_name.lower() == name), None)
        if projection is None:
            return frozenset()
        ids = {id(node) for node in projection.walk()}
        leaves: set[ColumnKey] = set()
        for column in scope.columns:
            if id(column) in ids:
                leaves |= self._column_leaves(scope, column)
        # Scalar subqueries inside the projection feed its value too.
        for sub in scope.subquery_scopes:
            if id(sub.expression) in ids or id(sub.expression.parent) in ids:
                for sub_name in self._output_names(sub):
                    leaves |= self._output_leaves(sub, sub_name)
        return frozenset(leaves)
