"""The scope check: prove a patch changed nothing but references to the source.

Run on every patch, whoever wrote it. Both versions are resolved with the catalog;
the new one is then *un-migrated* (target table -> source, each campaign expression
over target columns -> the old column) and must equal the old one node for node.
Output column names and order must match, the source must be gone, comments and
dbt Jinja must be untouched. A mismatch is reported as the first differing nodes.

>>> from skein.rewrite.testing import example_request
>>> req = example_request("SELECT user_id, COUNT(*) AS n FROM analytics.plays GROUP BY 1",
...                       {"user_id": "account_id"})
>>> check_scope(req, "SELECT account_id AS user_id, COUNT(*) AS n FROM analytics_v2.plays GROUP BY 1").ok
True
>>> check_scope(req, "SELECT account_id, COUNT(*) AS n FROM analytics_v2.plays GROUP BY 1").problems[0]
'statement 1: output columns changed: [user_id, n] -> [account_id, n]'
>>> check_scope(req, "SELECT play_id AS user_id, COUNT(*) AS n FROM analytics_v2.plays GROUP BY 1").ok
False
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import build_scope

from skein.agents.base import RewriteRequest
from skein.lineage import SchemaCache, _normalize, _split_statement, dataset_name


@dataclass(frozen=True)
class ScopeVerdict:
    ok: bool
    problems: list[str] = field(default_factory=list)

    @property
    def feedback(self) -> str:
        return "scope check passed" if self.ok else "scope check failed:\n" + "\n".join(
            f"- {p}" for p in self.problems)


def check_patch(request: RewriteRequest, new_text: str) -> ScopeVerdict:
    """``check_scope`` with dbt Jinja masked in the consumer's own project context."""
    from skein.rewrite.dbt_mask import jinja_masker

    masker = jinja_masker(request)
    return check_scope(request, new_text, masker.for_scope_check if masker else None)


def check_scope(request: RewriteRequest, new_text: str, masker=None) -> ScopeVerdict:
    """``masker(text) -> (sql, placeholder relations, jinja spans text)`` for dbt files."""
    problems: list[str] = []
    old_sql, old_tables, old_jinja = masker(request.text) if masker else (request.text, {}, [])
    new_sql, new_tables, new_jinja = masker(new_text) if masker else (new_text, {}, [])
    problems += _jinja_problems(request, old_jinja, new_jinja, old_tables, new_tables)
    problems += _comment_problems(request, old_sql, new_sql)
    try:
        old_statements = [s for s in sqlglot.parse(old_sql, read=request.dialect) if s]
        new_statements = [s for s in sqlglot.parse(new_sql, read=request.dialect) if s]
    except SqlglotError as exc:
        return ScopeVerdict(False, problems + [f"does not parse: {str(exc).splitlines()[0]}"])
    if len(old_statements) != len(new_statements):
        return ScopeVerdict(False, problems + [
            f"{len(old_statements)} statement(s) became {len(new_statements)}"])
    cache = SchemaCache.shared(request.schemas)
    old_aliases = {f"{request.default_schema}.{p}": r for p, r in old_tables.items()}
    new_aliases = {f"{request.default_schema}.{p}": r for p, r in new_tables.items()}
    for number, (old, new) in enumerate(zip(old_statements, new_statements), 1):
        problems += [f"statement {number}: {p}"
                     for p in _compare(request, old, new, cache, old_aliases, new_aliases)]
    return ScopeVerdict(not problems, problems)


def _resolved(statement, request, cache, aliases):
    tree = statement  # freshly parsed by check_scope: ours to change
    _normalize(tree, request.default_schema)
    for table in tree.find_all(exp.Table):  # masked dbt relations -> the relation they stand for
        name = dataset_name(table)
        full = name if "." in name else f"{request.default_schema}.{name}"
        if full in aliases:
            db, _, table_name = aliases[full].rpartition(".")
            table.set("this", exp.to_identifier(table_name))
            table.set("db", exp.to_identifier(db))
    query, produces = _split_statement(tree)
    if query is None:
        return tree, produces
    # Canonical aliases (_0, _1, ...): a table renamed by the migration keeps its place.
    resolved = qualify(query, dialect=request.dialect, schema=cache.for_dialect(request.dialect),
                       db=request.default_schema, quote_identifiers=False, identify=False,
                       validate_qualify_columns=True, canonicalize_table_aliases=True)
    _normalize(resolved, request.default_schema)  # Snowflake's qualify upper-cases names
    return resolved, produces


def _compare(request: RewriteRequest, old, new, cache, old_aliases, new_aliases) -> list[str]:
    # Before resolving: qualify turns USING into ON in place.
    using = {i.name.lower() for j in old.find_all(exp.Join) for i in j.args.get("using") or []}
    try:
        old_q, old_out = _resolved(old, request, cache, old_aliases)
    except (SqlglotError, KeyError, ValueError) as exc:
        return [f"the original does not resolve: {str(exc).splitlines()[0]}"]
    try:
        new_q, new_out = _resolved(new, request, cache, new_aliases)
    except (SqlglotError, KeyError, ValueError) as exc:
        return [f"the new version does not resolve against {request.target}: {str(exc).splitlines()[0]}"]
    problems = []
    if old_out != new_out:
        problems.append(f"it now writes {new_out} instead of {old_out}")
    old_names = getattr(old_q, "named_selects", [])
    new_names = getattr(new_q, "named_selects", [])
    _adopt_generated_names(old_q, new_q)
    new_names = [o if _generated(o) and len(old_names) == len(new_names) else n
                 for o, n in zip(old_names, new_names)] if len(old_names) == len(new_names) else new_names
    if old_names != new_names:
        problems.append(f"output columns changed: [{', '.join(old_names)}] -> [{', '.join(new_names)}]")
    if any(dataset_name(t) == request.source for t in new_q.find_all(exp.Table)):
        problems.append(f"still reads {request.source}")
    unmigrated = _unmigrate(new_q, request)
    old_q = _order_by_aliases(_blank_exists(_collapse_using(
        _without_internal_dropped(old_q, request), using)))
    unmigrated = _order_by_aliases(_blank_exists(_collapse_using(unmigrated, using)))
    old_bare, new_bare = _strip(old_q, copy=False), _strip(unmigrated, copy=False)
    if old_bare != new_bare:
        problems.append("changes beyond the migration: " + _describe_difference(old_bare, new_bare))
    return problems


def _without_internal_dropped(tree: exp.Expression, request: RewriteRequest) -> exp.Expression:
    """A CTE or derived table may stop selecting a dropped column nobody outside uses
    (a `*` over the source): compare without it. If something did use it, the new
    version fails to resolve, which is reported on its own."""
    dropped = {c.lower() for c, e in request.columns.items() if e is None}
    if not dropped or not isinstance(tree, exp.Query):
        return tree
    root = build_scope(tree)
    for scope in root.traverse() if root else ():
        if not (scope.is_cte or scope.is_derived_table) or not isinstance(scope.expression, exp.Select):
            continue
        for projection in list(scope.expression.expressions):
            column = projection.this if isinstance(projection, exp.Alias) else projection
            if isinstance(column, exp.Column) and column.name in dropped:
                source = scope.sources.get(column.table)
                if isinstance(source, exp.Table) and dataset_name(source) == request.source:
                    projection.pop()
    return tree


def _generated(name: str) -> bool:
    """A name qualify invented for an unaliased expression: the engine names it."""
    return name.startswith("_col_") and name[5:].isdigit()


def _adopt_generated_names(old_q: exp.Expression, new_q: exp.Expression) -> None:
    """Where the old output had no name of its own, the new one may pin the engine's name."""
    if not (isinstance(old_q, exp.Select) and isinstance(new_q, exp.Select)):
        return
    renamed = {}
    for old, new in zip(old_q.expressions, new_q.expressions):
        if isinstance(old, exp.Alias) and isinstance(new, exp.Alias) and _generated(old.alias):
            renamed[new.alias] = old.alias
            new.set("alias", exp.to_identifier(old.alias))
    order = new_q.args.get("order")
    for column in order.find_all(exp.Column) if order and renamed else ():
        if not column.table and column.name in renamed:  # ORDER BY <that name>
            column.set("this", exp.to_identifier(renamed[column.name]))


def _order_by_aliases(tree: exp.Expression) -> exp.Expression:
    """``ORDER BY sum(x)`` and ``ORDER BY <alias of sum(x)>`` sort alike; qualify writes one
    or the other depending on whether the projection had a name."""
    for select in tree.find_all(exp.Select):
        order = select.args.get("order")
        if not order:
            continue
        projections = [(p.alias, _strip(p.this)) for p in select.expressions if isinstance(p, exp.Alias)]
        for ordered in order.expressions:
            target = _strip(ordered.this)
            alias = next((a for a, e in projections if e == target), None)
            if alias is not None:
                ordered.set("this", exp.column(alias))
    return tree


def _blank_exists(tree: exp.Expression) -> exp.Expression:
    """What EXISTS (SELECT ...) selects is never read: qualify expands its `*` into each
    version's own columns, so compare it as SELECT 1."""
    for select in list(tree.find_all(exp.Select)):
        if isinstance(select.parent, exp.Exists):
            select.set("expressions", [exp.Literal.number(1)])
    return tree


def _collapse_using(tree: exp.Expression, using: set[str]) -> exp.Expression:
    """qualify spells a USING column as COALESCE(left.c, right.c); in a query without
    RIGHT or FULL joins that is left.c, which is how an ON join spells it. Only for the
    columns the original joined with USING."""
    if not using or any((j.side or "").upper() in ("RIGHT", "FULL") for j in tree.find_all(exp.Join)):
        return tree

    def collapse(node):
        if isinstance(node, exp.Coalesce) and not node.args.get("is_nvl"):
            args = [node.this, *node.expressions]
            if len(args) == 2 and all(isinstance(a, exp.Column) for a in args) and \
                    args[0].name == args[1].name and args[0].table != args[1].table and \
                    args[0].name in using:
                return args[0].copy()
        return node
    return tree.transform(collapse, copy=False)


def _target_aliases(tree: exp.Expression, target: str) -> set[str]:
    aliases = set()
    root = build_scope(tree) if isinstance(tree, exp.Query) else None
    for scope in root.traverse() if root else ():
        for name, node in scope.sources.items():
            if isinstance(node, exp.Table) and dataset_name(node) == target:
                aliases.add(name)
    return aliases


@functools.lru_cache(maxsize=1024)
def _pattern(expression: str, read: str, write: str, default_schema: str) -> exp.Expression:
    """A campaign expression as the consumer's dialect spells it, unqualified, bare."""
    pattern = sqlglot.parse_one(sqlglot.transpile(expression, read=read, write=write)[0], read=write)
    for column in pattern.find_all(exp.Column):
        column.set("table", None)
    _normalize(pattern, default_schema)
    return _strip(pattern)


def _shape(node: exp.Expression) -> tuple:
    """Cheap prefilter: root type (parentheses aside) and the column names used."""
    while isinstance(node, exp.Paren):
        node = node.this
    return type(node), frozenset(c.name for c in node.find_all(exp.Column))


def _unmigrate(new_q: exp.Expression, request: RewriteRequest) -> exp.Expression:
    """The new query with the campaign undone: it must then be the old query.

    ``new_q`` is the check's own resolved copy and is changed in place."""
    tree = new_q
    aliases = _target_aliases(tree, request.target)
    patterns = [(_pattern(expression, request.columns_dialect, request.dialect,
                          request.default_schema), old.lower())
                for old, expression in request.columns.items() if expression is not None]
    # Larger expressions first, so `duration_s * 1000` is not half-undone by a rename.
    patterns.sort(key=lambda p: -len(list(p[0].walk())))
    shapes = {_shape(p): None for p, _ in patterns}

    def undo(node):
        if not isinstance(node, exp.Expression) or isinstance(node, exp.Paren) or \
                _shape(node) not in shapes:
            return node
        qualifiers = {c.table for c in node.find_all(exp.Column)}
        if len(qualifiers) != 1 or not qualifiers <= aliases:
            return node
        bare = _strip(node)
        for column in bare.find_all(exp.Column):
            column.set("table", None)
        for pattern, old in patterns:
            if bare == pattern:
                return exp.column(old, table=qualifiers.pop())
        return node

    tree = tree.transform(undo, copy=False)
    source_db, _, source_table = request.source.rpartition(".")
    for table in tree.find_all(exp.Table):
        if dataset_name(table) == request.target:
            table.set("db", exp.to_identifier(source_db))
            table.set("this", exp.to_identifier(source_table))
    return tree


def _strip(tree: exp.Expression, copy: bool = True) -> exp.Expression:
    """Parentheses and comments carry no meaning for the comparison."""
    tree = tree.copy() if copy else tree
    for node in tree.walk():
        node.comments = None
    return tree.transform(lambda n: n.this if isinstance(n, exp.Paren) else n, copy=False)


def _describe_difference(old: exp.Expression, new: exp.Expression) -> str:
    old_sql, new_sql = old.sql(), new.sql()
    i = 0
    while i < min(len(old_sql), len(new_sql)) and old_sql[i] == new_sql[i]:
        i += 1
    start = max(0, i - 40)
    return f"expected ...{old_sql[start:i + 60]}... but found ...{new_sql[start:i + 60]}..."


def _comment_problems(request, old_sql: str, new_sql: str) -> list[str]:
    def comments(sql):
        try:
            return Counter(c.strip() for tok in sqlglot.tokenize(sql, read=request.dialect)
                           for c in tok.comments)
        except SqlglotError:
            return Counter()
    lost = comments(old_sql) - comments(new_sql)
    return [f"comments changed or removed: {sorted(lost)}"] if lost else []


def _jinja_problems(request, old_jinja: list[str], new_jinja: list[str], old_tables, new_tables):
    """Block tags and Jinja comments stay as written. ``{{ ... }}`` expressions may change
    (a macro argument naming a migrated column): their rendered SQL is what the
    comparison checks."""
    def kept(spans):
        return [s for s in spans if not s.startswith("{{")]
    if kept(old_jinja) != kept(new_jinja):
        return ["dbt Jinja block tags or comments changed ({% ... %}, {# ... #})"]
    if len(old_jinja) != len(new_jinja):
        return ["dbt Jinja expressions were added or removed"]
    return []
