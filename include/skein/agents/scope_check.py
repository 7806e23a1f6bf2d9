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
import re
from collections import Counter
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import build_scope

from skein.agents.base import RewriteRequest
from skein.lineage import SchemaCache, normalize_names, split_statement, dataset_name
from skein.rewrite.jinja import RELATION_CALL
from skein.rewrite.references import rows_ignore_projections


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
    from skein.dbt import DbtRenderError
    from skein.rewrite.dbt_mask import jinja_masker

    masker = jinja_masker(request)
    try:
        return check_scope(request, new_text, masker.for_scope_check if masker else None)
    except DbtRenderError as exc:
        return ScopeVerdict(False, [f"dbt Jinja does not render: {exc}"])


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


class _Unverifiable(Exception):
    """A statement the check cannot prove anything about: the patch is rejected."""


def _resolved(statement, request, cache, aliases):
    """The whole statement with its query resolved in place (CREATE/INSERT kept around it)."""
    tree = statement  # freshly parsed by check_scope: ours to change
    normalize_names(tree, request.default_schema)
    for table in tree.find_all(exp.Table):  # masked dbt relations -> the relation they stand for
        name = dataset_name(table)
        full = name if "." in name else f"{request.default_schema}.{name}"
        if full in aliases:
            db, _, table_name = aliases[full].rpartition(".")
            table.set("this", exp.to_identifier(table_name))
            table.set("db", exp.to_identifier(db))
    query, _ = split_statement(tree)
    migrated = {request.source, request.target}
    if query is None:
        if any(dataset_name(t) in migrated for t in tree.find_all(exp.Table)):
            raise _Unverifiable(f"a {tree.key.upper()} statement reading {request.source} or "
                                f"{request.target} cannot be verified")
        return tree, None
    if any(isinstance(n, (exp.Pivot, exp.Columns)) for n in query.walk()):
        raise _Unverifiable("PIVOT and COLUMNS(...) hide which columns are read: not verifiable")
    # Canonical aliases (_0, _1, ...): a table renamed by the migration keeps its place.
    resolved = qualify(query, dialect=request.dialect, schema=cache.for_dialect(request.dialect),
                       db=request.default_schema, quote_identifiers=False, identify=False,
                       validate_qualify_columns=True, canonicalize_table_aliases=True)
    normalize_names(resolved, request.default_schema)  # Snowflake's qualify upper-cases names
    if resolved is not query:
        if query is tree:
            tree = resolved
        else:
            query.replace(resolved)
    return tree, resolved


def _resolved_or_problem(statement, request, cache, aliases, label: str):
    try:
        return _resolved(statement, request, cache, aliases)
    except (SqlglotError, KeyError, ValueError) as exc:
        raise _Unverifiable(f"{label} does not resolve: {str(exc).splitlines()[0]}") from None


def _compare(request: RewriteRequest, old, new, cache, old_aliases, new_aliases) -> list[str]:
    # Before resolving: qualify turns USING into ON in place.
    using = {i.name.lower() for j in old.find_all(exp.Join) for i in j.args.get("using") or []}
    written_coalesce = old.find(exp.Coalesce) is not None
    old_query, _ = split_statement(old)
    # As written, before resolution: DuckDB names unnamed outputs after this text.
    written = [p.sql(dialect="duckdb") for p in getattr(old_query, "expressions", [])] \
        if isinstance(old_query, exp.Select) else []
    try:
        old_tree, old_q = _resolved_or_problem(old, request, cache, old_aliases, "the original")
        new_tree, new_q = _resolved_or_problem(new, request, cache, new_aliases,
                                               f"the new version (against {request.target})")
    except _Unverifiable as exc:
        return [str(exc)]
    if old_q is None or new_q is None:
        return [] if old_tree == new_tree else ["the statement changed"]
    problems = []
    old_names = list(getattr(old_q, "named_selects", []))
    new_names = list(getattr(new_q, "named_selects", []))
    if len(old_names) == len(new_names):
        adopted = _adopt_generated_names(old_q, new_q, request.dialect, written)
        new_names = [o if i in adopted else n for i, (o, n) in enumerate(zip(old_names, new_names))]
    if old_names != new_names:
        problems.append(f"output columns changed: [{', '.join(old_names)}] -> [{', '.join(new_names)}]")
    if any(dataset_name(t) == request.source for t in new_q.find_all(exp.Table)):
        problems.append(f"still reads {request.source}")
    _unmigrate(new_q, request)
    _without_internal_dropped(old_q, request)
    for tree in (old_tree, new_tree):
        if using and not written_coalesce:
            _collapse_using(tree, using)
        _order_by_aliases(_blank_exists(tree))
    old_bare, new_bare = _strip(old_tree, copy=False), _strip(new_tree, copy=False)
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
        if not rows_ignore_projections(scope.expression):
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


def _adopt_generated_names(old_q: exp.Expression, new_q: exp.Expression, dialect: str,
                           written: list[str]) -> set[int]:
    """Where the old output had no name of its own, the new one may pin the engine's name
    (DuckDB: ``skein.rewrite.rules.output_names``), or also have none; nothing else."""
    from skein.rewrite.rules.output_names import duckdb_column_name

    if not (isinstance(old_q, exp.Select) and isinstance(new_q, exp.Select)):
        return set()
    renamed, adopted = {}, set()
    for index, (old, new) in enumerate(zip(old_q.expressions, new_q.expressions)):
        if not (isinstance(old, exp.Alias) and isinstance(new, exp.Alias) and _generated(old.alias)):
            continue
        allowed = _generated(new.alias) or (
            dialect == "duckdb" and index < len(written)
            and new.alias.lower() == duckdb_column_name(written[index]).lower())
        if allowed:
            renamed[new.alias] = old.alias
            new.set("alias", exp.to_identifier(old.alias))
            adopted.add(index)
    order = new_q.args.get("order")
    for column in order.find_all(exp.Column) if order and renamed else ():
        if not column.table and column.name in renamed:  # ORDER BY <that name>
            column.set("this", exp.to_identifier(renamed[column.name]))
    return adopted


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
        # An aggregate makes EXISTS always true: then what it selects matters.
        if isinstance(select.parent, exp.Exists) and not any(
                p.find(exp.AggFunc) for p in select.expressions):
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
    normalize_names(pattern, default_schema)
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


def _jinja_problems(request, old_jinja, new_jinja, old_tables, new_tables) -> list[str]:
    """dbt Jinja (``(text, line)`` per span) may change only where the migration is:

    - ``ref()``/``source()``/``this`` calls (the relation read);
    - a ``{{ ... }}`` whose old text names a source column the campaign changes (a macro
      argument); its rendered SQL is what the comparison then checks;
    - nothing else: other expressions (``config``, ``var``) stay byte-identical, and block
      tags (``{% if %}``) and comments stay as written on their lines, so SQL cannot move
      in or out of a conditional block unseen.
    """
    if len(old_jinja) != len(new_jinja):
        return ["dbt Jinja expressions or tags were added or removed"]
    changing = {c.lower() for c, e in request.columns.items()
                if e is None or e.strip().lower() != c.lower()}
    problems = []
    for (old, old_line), (new, new_line) in zip(old_jinja, new_jinja):
        if not old.startswith("{{"):
            if (old, old_line) != (new, new_line):
                problems.append(f"dbt tag {old.strip()!r} (line {old_line}) changed or moved")
            continue
        if old == new or RELATION_CALL.match(old[2:-2].strip()):
            continue
        words = {w.lower() for w in re.findall(r"[A-Za-z_]\w*", old)}
        if not words & changing:
            problems.append(f"dbt expression {old.strip()!r} (line {old_line}) changed: only "
                            "ref()/source() calls and arguments naming migrated columns may")
    return problems
