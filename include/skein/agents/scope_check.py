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

import re
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.errors import SqlglotError

from skein.rewrite.request import RewriteRequest
from skein.agents.canonical import Migration, Unverifiable, canonicalize, strip_cosmetics
from skein.lineage import split_statement
from skein.rewrite.jinja import RELATION_CALL
from skein.rewrite.parsed import ParsedSQL, parse_sql
from skein.rewrite.references import maybe_pivot_or_columns, nested_using_join
from skein.rewrite.resolve import Catalog, Resolution, Unresolved

@dataclass(frozen=True)
class ScopeVerdict:
    ok: bool
    problems: list[str] = field(default_factory=list)

    @property
    def feedback(self) -> str:
        return "scope check passed" if self.ok else "scope check failed:\n" + "\n".join(
            f"- {p}" for p in self.problems)


def check_patch(request: RewriteRequest, new_text: str, original: ParsedSQL | None = None,
                edits: list | None = None) -> ScopeVerdict:
    """``check_scope`` with dbt Jinja masked in the consumer's own project context.

    ``original``: ``request.text`` already parsed and resolved (the rule agent's), used up
    by the check; with the rules' ``edits`` too, ``skein.agents.edit_check`` may prove the
    patch without parsing it whole (else the full check runs)."""
    from skein.agents.edit_check import check_edits
    from skein.dbt import DbtRenderError
    from skein.rewrite.dbt_mask import jinja_masker

    masker = jinja_masker(request)
    try:
        if masker:  # the check masks differently from the rules (whole rendered expressions)
            return check_scope(request, new_text, masker.for_scope_check)
        if original is not None and edits and check_edits(request, original, edits, new_text):
            return ScopeVerdict(True)
        return check_scope(request, new_text, original=original)
    except DbtRenderError as exc:
        return ScopeVerdict(False, [f"dbt Jinja does not render: {exc}"])


def check_scope(request: RewriteRequest, new_text: str, masker=None,
                original: ParsedSQL | None = None) -> ScopeVerdict:
    """``masker(text) -> (sql, placeholder relations, jinja spans text)`` for dbt files;
    ``original``: ``request.text`` parsed with the request's dialect (its trees are changed)."""
    problems: list[str] = []
    old_sql, old_tables, old_jinja = masker(request.text) if masker else (request.text, {}, [])
    new_sql, new_tables, new_jinja = masker(new_text) if masker else (new_text, {}, [])
    problems += _jinja_problems(request, old_jinja, new_jinja, old_tables, new_tables)
    try:
        old = original if original is not None and original.text == old_sql else \
            parse_sql(old_sql, request.dialect)
        new = parse_sql(new_sql, request.dialect)
    except SqlglotError as exc:
        return ScopeVerdict(False, problems + [f"does not parse: {str(exc).splitlines()[0]}"])
    lost = old.comments - new.comments
    if lost:
        problems.append(f"comments changed or removed: {sorted(lost)}")
    if len(old.statements) != len(new.statements):
        return ScopeVerdict(False, problems + [
            f"{len(old.statements)} statement(s) became {len(new.statements)}"])
    aliases = ({f"{request.default_schema}.{p}": r for p, r in old_tables.items()},
               {f"{request.default_schema}.{p}": r for p, r in new_tables.items()})
    found = _compare_all(request, old, new, aliases, thorough=False)
    if found:
        # Another author may have added parentheses or quoting the comparison form keeps:
        # compare once more without any (both texts parsed again: the first pass used the trees).
        found = _compare_all(request, parse_sql(old_sql, request.dialect),
                             parse_sql(new_sql, request.dialect), aliases, thorough=True)
    problems += found
    return ScopeVerdict(not problems, problems)


def _compare_all(request, old: ParsedSQL, new: ParsedSQL, aliases, thorough: bool) -> list[str]:
    migration = Migration.of(request, thorough)
    catalog = Catalog(request.schemas, request.default_schema)
    patterned = maybe_pivot_or_columns(old.text) or maybe_pivot_or_columns(new.text)
    problems = []
    for number, (old_statement, new_statement) in enumerate(zip(old.statements, new.statements), 1):
        resolution = None if thorough or aliases[0] else old.resolutions.get(number - 1)
        found = _compare(request, migration, catalog, old_statement, new_statement, aliases,
                         patterned, resolution, old)
        problems += [f"statement {number}: {p}" for p in found]
    return problems


def _query_of(statement, request, catalog, aliases, patterned, thorough):
    """The statement's query, ready to resolve (None for statements without one)."""
    if thorough:
        statement = strip_cosmetics(statement)
    if aliases:  # masked dbt relations -> the relation they stand for
        for table in statement.find_all(exp.Table):
            relation = aliases.get(catalog.dataset(table))
            if relation is not None:
                db, _, name = relation.rpartition(".")
                table.set("this", exp.to_identifier(name))
                table.set("db", exp.to_identifier(db))
    query, _ = split_statement(statement)
    if query is None:
        if any(catalog.dataset(t) in (request.source, request.target) for t in statement.find_all(exp.Table)):
            raise Unverifiable(f"a {statement.key.upper()} statement reading {request.source} or "
                               f"{request.target} cannot be verified")
        return statement, None
    if patterned and query.find(exp.Pivot, exp.Columns):
        raise Unverifiable("PIVOT and COLUMNS(...) hide which columns are read: not verifiable")
    if nested_using_join(query) is not None:
        raise Unverifiable("a USING or NATURAL join inside parentheses or before SELECT: which "
                           "columns it merges is not verified")
    if patterned and query.find(exp.PositionalColumn):
        raise Unverifiable("a positional column (#n) reads whichever column is at that place: "
                           "not verifiable")
    return statement, query


def _compare(request, migration: Migration, catalog: Catalog, old, new, aliases, patterned: bool,
             old_resolution: Resolution | None, old_parsed: ParsedSQL) -> list[str]:
    try:
        old, old_q = _query_of(old, request, catalog, aliases[0], patterned, migration.thorough)
        new, new_q = _query_of(new, request, catalog, aliases[1], patterned, migration.thorough)
    except Unverifiable as exc:
        return [str(exc)]
    if old_q is None or new_q is None:
        return [] if old == new else ["the statement changed"]
    written = _unnamed_outputs(old_q, old_parsed) if request.dialect == "duckdb" else {}
    try:
        old_res = old_resolution or Resolution(old_q, catalog, request.dialect)
    except Unresolved as exc:
        return [f"the original does not resolve: {exc}"]
    try:
        new_res = Resolution(new_q, catalog, request.dialect)
    except Unresolved as exc:
        return [f"the new version (against {request.target}) does not resolve: {exc}"]
    problems = []
    if any(catalog.dataset(t) == request.source for scope in new_res.scopes for t in scope.tables):
        problems.append(f"still reads {request.source}")
    elif any(c.args.get("db") and f"{c.db}.{c.table}".lower() == request.source
             for c in new_q.find_all(exp.Column)):
        problems.append(f"a column is still qualified with {request.source}")
    try:
        old_names = canonicalize(old, old_q, old_res, migration, "old")
        new_names = canonicalize(new, new_q, new_res, migration, "new")
    except Unverifiable as exc:
        return problems + [str(exc)]
    _adopt_engine_names(old_q, new_q, old_names, new_names, written)
    if old_names != new_names:
        problems.append(f"output columns changed: [{', '.join(old_names)}] -> [{', '.join(new_names)}]")
    if old != new:
        problems.append("changes beyond the migration: " + _describe_difference(old, new))
    return problems


def _root_select(query: exp.Expression) -> exp.Select | None:
    while isinstance(query, exp.SetOperation):
        query = query.this
    query = query.unnest() if isinstance(query, exp.Subquery) else query
    return query if isinstance(query, exp.Select) else None


def _unnamed_outputs(query: exp.Expression, parsed: ParsedSQL) -> dict[int, str]:
    """Output expressions without a name of their own, as written in the original text
    (DuckDB names them after it; taken before the comparison form changes the tree)."""
    from skein.rewrite.rules.output_names import written_projection

    select = query if isinstance(query, exp.Select) else None
    return {id(p): written_projection(parsed.text, parsed.tokens, p) for p in select.expressions
            if not p.output_name and not p.is_star} if select is not None else {}


def _adopt_engine_names(old_q, new_q, old_names: list[str], new_names: list[str],
                        written: dict[int, str]) -> None:
    """Where the old output had no name of its own, the new one may pin the engine's name
    (DuckDB: ``skein.rewrite.rules.output_names``), or also have none; nothing else."""
    from skein.rewrite.rules.output_names import duckdb_column_name

    old_select, new_select = _root_select(old_q), _root_select(new_q)
    if old_select is None or new_select is None or len(old_names) != len(new_names) or \
            len(old_select.expressions) != len(old_names) or len(new_select.expressions) != len(new_names):
        return
    for index, (old, new) in enumerate(zip(old_select.expressions, new_select.expressions)):
        text = written.get(id(old))
        if old_names[index] or not new_names[index] or text is None or not isinstance(new, exp.Alias):
            continue
        engine_name = duckdb_column_name(text)
        if engine_name is not None and new_names[index] == engine_name.lower():
            new.replace(new.this)
            new_names[index] = ""


def _describe_difference(old: exp.Expression, new: exp.Expression) -> str:
    old_sql, new_sql = old.sql(), new.sql()
    i = 0
    while i < min(len(old_sql), len(new_sql)) and old_sql[i] == new_sql[i]:
        i += 1
    start = max(0, i - 40)
    return f"expected ...{old_sql[start:i + 60]}... but found ...{new_sql[start:i + 60]}..."


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
