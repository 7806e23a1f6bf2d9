"""The scope check for the rule agent's own patches, without parsing the patched file again.

A rule patch is a list of text edits to an original that is already parsed and resolved:
each edit replaces a column reference, or part of a table reference, by text the rules
wrote. The patched query is then the original tree with those nodes replaced, provided
each replacement takes the replaced node's place whatever surrounds it:

- a primary (a column, a literal, ``f(...)``, ``CAST(...)``, ``(...)``, ``CASE ... END``)
  takes any expression's place;
- other text only the place of a whole projection (``<expr> AS name``), which commas and
  clause keywords delimit.

What a replacement text is (its columns, whether it is a primary, whether it is the
campaign's expression for a column) does not depend on where it goes, and the rules write
the same few texts everywhere: each distinct text is parsed once per process. Where it goes
only decides what its columns read, which is resolved as if they were written in the
replaced column's place. This proves what the full check (``scope_check``) compares:
every replaced reference un-migrates to the old column, read from the same table; every
reference the rules left alone still reads what it read (the target has the column under
the same name, and no name became ambiguous or shadowed); projection names are kept; the
source is read nowhere. The original tree is not changed.

It only ever accepts. Whatever it cannot prove (a ``*`` or USING join over the migrated
table, a pinned output name, an unexpected edit, a mismatch) makes it answer False, and
the full check decides, with its own messages.

>>> from skein.rewrite.testing import example_request
>>> from skein.agents.testing import rule_patch
>>> request = example_request("SELECT user_id, SUM(ms_played) AS ms FROM analytics.plays p GROUP BY 1",
...                           {"user_id": "account_id", "ms_played": "CAST(duration_s * 1000 AS BIGINT)"})
>>> original, edits, text = rule_patch(request)
>>> text
'SELECT account_id AS user_id, SUM(CAST(duration_s * 1000 AS BIGINT)) AS ms FROM analytics_v2.plays p GROUP BY 1'
>>> check_edits(request, original, edits, text)
True
>>> original, edits, _ = rule_patch(request)
>>> check_edits(request, original, edits, text.replace("1000", "100"))  # not what the edits make
False
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope
from sqlglot.tokens import TokenType

from skein.rewrite.request import RewriteRequest
from skein.agents.canonical import campaign_pattern
from skein.rewrite.edits import Edit, apply_edits
from skein.rewrite.parsed import ParsedSQL, tokenize_and_parse
from skein.rewrite.resolve import ALIAS, SOURCE, USING, Catalog, Resolution, Unresolved

_WORD = re.compile(r"[\w$`\"\]]")
_TABLE_ARGS = {"this", "db", "catalog", "alias"}
# Nodes that change how a column under them is read (clauses, aggregates, windows, ...):
# a replacement holding one is not resolved as if in the replaced column's place.
_CONTEXTUAL = (exp.Query, exp.AggFunc, exp.Window, exp.Star, exp.Order, exp.Distinct, exp.Having,
               exp.Qualify, exp.Join, exp.Table, exp.Hint, exp.Cluster, exp.Group, exp.Lambda)


class _CannotProve(Exception):
    """Leave the verdict to the full check."""


def check_edits(request: RewriteRequest, original: ParsedSQL, edits: list[Edit], new_text: str) -> bool:
    """True when the patch provably passes the scope check; False: run the full check.

    ``original`` is ``request.text`` parsed and resolved by the rules (not changed here)."""
    if not edits or apply_edits(original.text, edits) != new_text:
        return False
    try:
        _Proof(request, original, edits).run()
    except (_CannotProve, SqlglotError):
        return False
    except Exception:  # noqa: BLE001 - a surprise here costs the full check, never a verdict
        return False
    return True


class _Fragment(NamedTuple):
    """What a replacement text is, wherever it is put."""

    alias: str | None  # ``<expr> AS alias``, lowercase
    primary: bool  # the grammar around it cannot take it apart
    columns: tuple[tuple[str, str], ...]  # (qualifier or "", name), lowercase
    plain: bool  # nothing inside changes how its columns are read
    bare: exp.Expression  # the expression: outer parentheses off, columns qualified with "_"


@functools.lru_cache(maxsize=8192)
def _fragment(text: str, dialect: str) -> _Fragment | None:
    tokens, statements = tokenize_and_parse("SELECT " + text, dialect)
    if any(t.comments or t.token_type == TokenType.SEMICOLON for t in tokens) or len(statements) != 1:
        return None
    select = statements[0]
    if not isinstance(select, exp.Select) or len(select.expressions) != 1 or \
            any(v for k, v in select.args.items() if k != "expressions"):
        return None
    projection = select.expressions[0]
    alias = projection.alias.lower() if isinstance(projection, exp.Alias) else None
    core = projection.this if isinstance(projection, exp.Alias) else projection
    columns = list(core.find_all(exp.Column))
    if any(c.args.get("db") or c.args.get("catalog") or not isinstance(c.this, exp.Identifier) for c in columns):
        return None
    found = tuple((c.table.lower(), c.name.lower()) for c in columns)
    plain = isinstance(core, exp.Column) or core.find(*_CONTEXTUAL) is None
    for column in columns:
        column.set("table", exp.Identifier(this="_"))
        column.set("this", exp.Identifier(this=column.name.lower()))
    while isinstance(core, exp.Paren):
        core = core.this
    return _Fragment(alias, _primary(tokens[1:]), found, plain, core)


@functools.lru_cache(maxsize=8192)
def _is_campaign_expression(text: str, dialect: str, mapped: str, columns_dialect: str) -> bool:
    fragment = _fragment(text, dialect)
    pattern, _ = campaign_pattern(mapped, columns_dialect, dialect, False, "_")
    return fragment is not None and fragment.bare == pattern


@functools.lru_cache(maxsize=4096)
def _table(text: str, dialect: str) -> tuple[str, str, str | None] | None:
    """``(schema, table, alias)`` of a table reference's text, lowercase ("" for no schema)."""
    tokens, statements = tokenize_and_parse("SELECT 1 FROM " + text, dialect)
    select = statements[0] if len(statements) == 1 else None
    if any(t.comments for t in tokens) or not isinstance(select, exp.Select) or select.args.get("joins"):
        return None
    table = select.args["from_"].this
    if not isinstance(table, exp.Table) or {k for k, v in table.args.items() if v} - _TABLE_ARGS:
        return None
    return table.db.lower(), table.name.lower(), table.alias.lower() or None


class _Proof:
    def __init__(self, request: RewriteRequest, original: ParsedSQL, edits: list[Edit]):
        self.request = request
        self.original = original
        self.edits = edits
        self.catalog = Catalog(request.schemas, request.default_schema)
        schemas = self.catalog.cache.lowercase()
        target = schemas.get(request.target)
        if target is None:
            raise _CannotProve
        self.target_columns = target
        self.target_names = frozenset(target)
        source = frozenset(schemas.get(request.source, ()))
        self.keeps = frozenset(c for c in self.target_names
                               if c in source and (request.mapping_for(c) or "").strip().lower() == c)
        self.names: dict[tuple[int, str], str] = {}  # (scope, source name) -> canonical name

    def canonical(self, scope: Scope, key: str) -> str:
        return self.names.setdefault((id(scope), key), f"_{len(self.names)}")

    def run(self) -> None:
        columns, tables, resolutions = self._index()
        column_edits, table_edits = self._classify(columns, tables)
        swaps = self._tables(tables, table_edits)
        views = {id(r): r.swapped(swaps) for r in resolutions}
        introduced = self._introduced(column_edits)
        for column, ref, resolution, edit in column_edits:
            self._replaced(column, ref, edit, views[id(resolution)], introduced)
        edited = {id(c) for c, _, _, _ in column_edits}
        for resolution in resolutions:
            self._untouched(resolution, edited, swaps)

    # -- what the original has where ---------------------------------------------------------
    def _index(self):
        """References to the migrated table by span, and the migrated table references."""
        columns: dict[tuple[int, int], tuple[exp.Column, object, Resolution]] = {}
        tables: dict[int, tuple[exp.Table, Scope, str, Resolution]] = {}
        resolutions = []
        for number, statement in enumerate(self.original.statements):
            resolution = self.original.resolutions.get(number)
            if resolution is None:
                continue  # no query: the rules never edit it (an edit there is not classified)
            resolutions.append(resolution)
            migrated: set[int] = set()
            for scope in resolution.scopes:
                for key, node in scope.sources.items():
                    if isinstance(node, exp.Table) and self.catalog.dataset(node) == self.request.source:
                        tables[id(node)] = (node, scope, key.lower(), resolution)
                        migrated.add(id(node))
                for table in scope.tables:  # a reference the rules do not retarget
                    if self.catalog.dataset(table) == self.request.source and id(table) not in tables:
                        raise _CannotProve
            for column, ref in resolution.refs:  # only these may be edited
                if id(ref.source) in migrated:
                    span = _span(column)
                    if span is not None:
                        columns[span] = (column, ref, resolution)
            self._refuse_stars_and_using(resolution, migrated)
        return columns, tables, resolutions

    def _refuse_stars_and_using(self, resolution: Resolution, migrated: set[int]) -> None:
        """A ``*`` over the migrated table, and USING on a column it does not keep, change
        shape when rewritten (an explicit list, an ON join): the full check compares those.
        (A ``*`` over a CTE keeps its columns: their names are checked where they change.)"""
        for scope in resolution.scopes:
            select = scope.expression
            if not isinstance(select, exp.Select):
                continue
            sources = resolution.sources(scope)
            for projection in select.expressions:
                if not projection.is_star or isinstance(select.parent, exp.Exists):
                    continue
                qualifier = projection.table.lower() if isinstance(projection, exp.Column) else None
                if any(id(s.source) in migrated for key, s in sources.items() if qualifier in (None, key)):
                    raise _CannotProve
            for join in select.args.get("joins") or []:
                using = {i.name.lower() for i in join.args.get("using") or []}
                if using - self.keeps and any(id(s.source) in migrated for s in sources.values()):
                    raise _CannotProve

    def _classify(self, columns, tables):
        column_edits, table_edits = [], {}
        spans = {i: _table_span(t) for i, (t, _, _, _) in tables.items()}
        for edit in self.edits:
            self._boundaries(edit)
            found = columns.get((edit.start, edit.end))
            if found is not None:
                column, ref, resolution = found
                column_edits.append((column, ref, resolution, edit))
                continue
            table = next((i for i, (start, end) in spans.items() if start <= edit.start and edit.end <= end), None)
            if table is None:
                raise _CannotProve  # a pinned output name, a star, USING: not proven here
            table_edits.setdefault(table, []).append(edit)
        return column_edits, table_edits

    def _boundaries(self, edit: Edit) -> None:
        """The edit neither glues onto neighbouring text nor drops a comment."""
        text = self.original.text
        if edit.text and ((edit.start > 0 and _WORD.match(text[edit.start - 1]) and _WORD.match(edit.text[0]))
                          or (edit.end < len(text) and _WORD.match(text[edit.end]) and _WORD.match(edit.text[-1]))):
            raise _CannotProve
        replaced = text[edit.start:edit.end]
        if "--" in replaced or "/*" in replaced or "#" in replaced or "//" in replaced:
            raise _CannotProve

    # -- tables ------------------------------------------------------------------------------
    def _tables(self, tables, table_edits) -> dict[int, tuple[str, tuple[str, ...]]]:
        """Each migrated table reads the target now, known by the same name (or by the old
        table name given as alias); returns the swaps for resolving the patched query."""
        swaps = {}
        for node_id, (table, scope, key, resolution) in tables.items():
            edits = table_edits.get(node_id)
            if not edits or {k for k, v in table.args.items() if v} - _TABLE_ARGS:
                raise _CannotProve  # still reads the source, or more than a name to compare
            start, end = _table_span(table)
            end = max([end] + [e.end for e in edits])
            text = apply_edits(self.original.text[start:end],
                               [Edit(e.start - start, e.end - start, e.text, e.why) for e in edits])
            new = _table(text, self.request.dialect)
            if new is None or f"{new[0] or self.catalog.default_schema}.{new[1]}" != self.request.target:
                raise _CannotProve
            _, name, alias = new
            if table.alias:  # the alias is outside the edited text: kept
                new_key = key if alias is None else None
            else:
                new_key = alias or name
            if new_key != key and (new_key is None or alias or _known_around(resolution, scope, new_key)):
                raise _CannotProve  # another name, taken here or by an enclosing scope: full check
            self.names[(id(scope), new_key)] = self.canonical(scope, key)
            swaps[node_id] = (new_key, self.target_columns)
        return swaps

    # -- replaced references -----------------------------------------------------------------
    def _introduced(self, column_edits) -> dict[int, set[str]]:
        """Projection aliases the edits add (a bare ``user_id`` becomes ``... AS user_id``)."""
        introduced: dict[int, set[str]] = {}
        for column, _, _, _ in column_edits:
            if _bare_projection(column):
                introduced.setdefault(id(column.parent), set()).add(column.name.lower())
        return introduced

    def _replaced(self, column: exp.Column, ref, edit: Edit, view: Resolution, introduced) -> None:
        """The replacement is the campaign's expression for the old column, over the target
        table the old column's table became, and takes the old column's place."""
        fragment = _fragment(edit.text, self.request.dialect)
        if fragment is None or ref.kind != SOURCE or not fragment.plain:
            raise _CannotProve
        bare = _bare_projection(column)
        alias_child = isinstance(column.parent, exp.Alias) and _bare_projection(column.parent)
        if bare:  # keeps its name with an alias
            if fragment.alias != column.name.lower():
                raise _CannotProve
        elif fragment.alias is not None or not (fragment.primary or (alias_child and self._explicit_as(edit))):
            raise _CannotProve
        elif not alias_child and _names_the_projection(column):
            raise _CannotProve  # CAST(user_id AS TEXT) is named after its column
        expected = self.canonical(ref.scope, ref.name)
        select = column.parent_select
        added = introduced.get(id(select), ()) if select is not None else ()
        for qualifier, name in fragment.columns:
            if not qualifier and name in added:
                raise _CannotProve  # a new alias of that name could be read instead
            # Read as if written in the old column's place. Where that place differs for a
            # column inside a larger replacement (BigQuery's GROUP BY <alias>, a star's
            # EXCLUDE list), the answer is an alias or nothing: no proof, never a wrong one.
            try:
                found = view.name_at(ref.own, column, qualifier, name)
            except Unresolved:
                raise _CannotProve from None
            if found is None or found.kind != SOURCE or self.names.get((id(found.scope), found.name)) != expected:
                raise _CannotProve
        mapped = self.request.mapping_for(column.name)
        if mapped is None or not _is_campaign_expression(edit.text, self.request.dialect, mapped,
                                                         self.request.columns_dialect):
            raise _CannotProve

    def _explicit_as(self, edit: Edit) -> bool:
        """``<expr> AS name``: with the keyword, no trailing word of the expression can be
        read as the alias (``x + INTERVAL 1 day`` would be, without it)."""
        rest = self.original.text[edit.end:edit.end + 40].lstrip()
        return rest[:2].upper() == "AS" and not _WORD.match(rest[2:3] or " ")

    # -- references left as they were -------------------------------------------------------
    def _untouched(self, resolution: Resolution, edited: set[int], swaps) -> None:
        """Every reference the rules did not edit reads in the patched query what it read."""
        migrated_scopes = {id(scope) for scope in resolution.scopes
                           if any(id(s) in swaps for s in scope.sources.values())}
        new_keys = {id(t): key for t, (key, _) in ((t, swaps[id(t)]) for scope in resolution.scopes
                                                   for t in scope.sources.values() if id(t) in swaps)}
        for column, ref in resolution.refs:
            if id(column) in edited:
                continue
            name = column.name.lower()
            if ref.kind == SOURCE and id(ref.source) in swaps:
                # Kept as it is: the target has it, the campaign keeps it, its table still has the name.
                if name not in self.keeps or (column.table and column.table.lower() != new_keys[id(ref.source)]):
                    raise _CannotProve
            elif ref.kind == USING and name in self.keeps:
                continue  # still merged from the same tables: the target keeps the column
            elif ref.kind in (SOURCE, USING, ALIAS) and not column.table and name in self.target_names:
                # The target has a column of that name: a scope on the way may now see it first.
                scope = ref.own
                for _ in range(ref.hops + 1):
                    if scope is None:
                        break
                    if id(scope) in migrated_scopes:
                        raise _CannotProve
                    scope = scope.parent


def _known_around(resolution: Resolution, scope: Scope | None, key: str) -> bool:
    while scope is not None:
        if key in resolution.sources(scope):
            return True
        scope = scope.parent
    return False


def _span(column: exp.Column) -> tuple[int, int] | None:
    starts = [p.meta["start"] for p in column.parts if isinstance(p, exp.Identifier) and "start" in p.meta]
    ends = [p.meta["end"] + 1 for p in column.parts if isinstance(p, exp.Identifier) and "end" in p.meta]
    return (min(starts), max(ends)) if starts and len(starts) == len(column.parts) else None


def _table_span(table: exp.Table) -> tuple[int, int]:
    parts = [p for p in (table.args.get("catalog"), table.args.get("db"), table.this)
             if isinstance(p, exp.Identifier) and "start" in p.meta]
    if not parts:
        return (-1, -1)
    return min(p.meta["start"] for p in parts), max(p.meta["end"] + 1 for p in parts)


def _bare_projection(node: exp.Expression) -> bool:
    return isinstance(node.parent, exp.Select) and node.arg_key == "expressions"


def _names_the_projection(column: exp.Column) -> bool:
    """The column is inside an unaliased projection whose output name comes from it."""
    node = column
    while node.parent is not None and not isinstance(node.parent, exp.Query):
        node = node.parent
    return _bare_projection(node) and not isinstance(node, exp.Alias) and bool(node.output_name)


def _primary(tokens) -> bool:
    """A name chain, a literal, ``f(...)``, ``(...)`` or ``CASE ... END``, judged on tokens:
    the grammar around it cannot take it apart."""
    if not tokens:
        return False
    types = [t.token_type for t in tokens]
    if all(t in (TokenType.VAR, TokenType.IDENTIFIER) if i % 2 == 0 else t == TokenType.DOT
           for i, t in enumerate(types)) and len(types) % 2 == 1:
        return True  # a (qualified) column
    if len(types) == 1:
        return types[0] in (TokenType.NUMBER, TokenType.STRING, TokenType.NULL, TokenType.TRUE, TokenType.FALSE)
    if types[0] == TokenType.CASE:
        return types[-1] == TokenType.END and _closes_at_end(types, TokenType.CASE, TokenType.END)
    opening = 0 if types[0] == TokenType.L_PAREN else 1 if types[1] == TokenType.L_PAREN else None
    if opening is None or types[-1] != TokenType.R_PAREN:
        return False
    if opening == 1 and types[0] not in (TokenType.VAR, TokenType.IDENTIFIER) and not tokens[0].text.isidentifier():
        return False  # f(...) needs a name before the parenthesis, not an operator
    if opening == 1 and tokens[0].text.upper() in ("NOT", "EXISTS", "INTERVAL", "ANY", "ALL", "SOME"):
        return False
    return _closes_at_end(types[opening:], TokenType.L_PAREN, TokenType.R_PAREN)


def _closes_at_end(types, opening, closing) -> bool:
    depth = 0
    for index, kind in enumerate(types):
        depth += kind == opening
        depth -= kind == closing
        if depth == 0 and index < len(types) - 1:
            return False
    return depth == 0
