"""Edits to a dbt project's YAML (sources, models, seeds, semantic models) as minimal diffs.

ruamel.yaml's round-trip dump re-indents sequences and rewraps long scalars it did not touch,
so, like the SQL rules, these functions find the exact scalars with ruamel's composer (each
node knows its byte range) and splice replacements into the original text: every byte
outside an edit survives, comments, order, quoting and indentation included.
``skein.rewrite.dbt_yaml_check`` proves it on the result (re-parsed, only the intended values
changed). One edit per function; each returns a ``YamlPatch``.

>>> text = "models:\\n  - name: orders  # the fact\\n    columns:\\n      - name: 'waiter_id'\\n"
>>> print(rename_columns(text, "m.yml", Owner("model", "orders"), {"waiter_id": "server_id"}).text, end="")
models:
  - name: orders  # the fact
    columns:
      - name: 'server_id'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from skein.errors import SpecError
from skein.rewrite.edits import Edit, apply_edits

MISSING = "<missing>"  # the old value of a key an edit adds
SEMANTIC_PARTS = ("entities", "dimensions", "measures")


@dataclass(frozen=True)
class Owner:
    """The YAML entry that describes the relation whose columns change: a model or seed by
    name, or a source table as ``source_name.table_name``."""

    kind: Literal["model", "seed", "source"]
    name: str


@dataclass
class YamlPatch:
    original: str
    edits: list[Edit] = field(default_factory=list)
    # parsed path -> (old value, new value): what the scope check must find changed, and nothing else
    expected: dict[tuple, tuple] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return apply_edits(self.original, self.edits)


def compose(text: str, file: str) -> Node | None:
    """The YAML node tree with byte offsets; not YAML is a ``SpecError`` naming the line."""
    try:
        return YAML().compose(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=file,
                        line=mark.line + 1 if mark else None) from None


def child(node: Node | None, key: str) -> tuple[Node | None, int]:
    """The value of ``key`` in a mapping node and its position among the keys (or None, -1)."""
    if isinstance(node, MappingNode):
        for number, (k, v) in enumerate(node.value):
            if isinstance(k, ScalarNode) and k.value == key:
                return v, number
    return None, -1


def items(node: Node | None) -> list[Node]:
    return list(node.value) if isinstance(node, SequenceNode) else []


def scalar(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) else None


def same(a: str | None, b: str) -> bool:
    """dbt and the warehouses Skein targets fold unquoted names: compare case-insensitively."""
    return a is not None and a.lower() == b.lower()


def owner_entries(root: Node | None, owner: Owner) -> list[tuple[Node, tuple]]:
    """The entries describing ``owner`` (a source table matches by name or ``identifier``)."""
    if owner.kind == "source":
        source_name, _, table_name = owner.name.partition(".")
        return [(t, ("sources", i, "tables", j))
                for i, s in enumerate(items(child(root, "sources")[0]))
                if same(scalar(child(s, "name")[0]), source_name)
                for j, t in enumerate(items(child(s, "tables")[0]))
                if same(scalar(child(t, "name")[0]), table_name)
                or same(scalar(child(t, "identifier")[0]), table_name)]
    top = f"{owner.kind}s"
    return [(m, (top, i)) for i, m in enumerate(items(child(root, top)[0]))
            if same(scalar(child(m, "name")[0]), owner.name)]


def column_entries(root: Node | None, owner: Owner) -> list[tuple[Node, tuple]]:
    """The ``columns:`` items of ``owner`` (with their parsed paths).

    >>> root = compose("sources:\\n  - name: raw\\n    tables:\\n      - name: t\\n        columns:\\n          - name: a\\n", "s.yml")
    >>> [(scalar(child(n, "name")[0]), p) for n, p in column_entries(root, Owner("source", "raw.t"))]
    [('a', ('sources', 0, 'tables', 0, 'columns', 0))]
    """
    return [(c, (*path, "columns", k)) for entry, path in owner_entries(root, owner)
            for k, c in enumerate(items(child(entry, "columns")[0]))]


def refers_to(expression: str | None, owner: Owner) -> bool:
    """Whether a test's ``to:`` (``ref('orders')``, ``source('raw', 'orders')``) is ``owner``.

    >>> refers_to("ref('orders')", Owner("seed", "orders")), refers_to("source('raw','t')", Owner("source", "raw.t"))
    (True, True)
    """
    if expression is None:
        return False
    if owner.kind == "source":
        source_name, _, table_name = owner.name.partition(".")
        pattern = (r"source\(\s*['\"]" + re.escape(source_name) + r"['\"]\s*,\s*['\"]"
                   + re.escape(table_name) + r"['\"]\s*\)")
    else:
        pattern = r"ref\(\s*(?:['\"][^'\"]+['\"]\s*,\s*)?['\"]" + re.escape(owner.name) + r"['\"]\s*(?:,[^)]*)?\)"
    return re.fullmatch(pattern, expression.strip(), re.I) is not None


def walk(node: Node | None, path: tuple = ()):
    """Every mapping node under ``node`` with its parsed path."""
    if isinstance(node, MappingNode):
        yield node, path
        for k, v in node.value:
            yield from walk(v, (*path, scalar(k)))
    elif isinstance(node, SequenceNode):
        for i, v in enumerate(node.value):
            yield from walk(v, (*path, i))


def semantic_parts(root: Node | None, owner: Owner) -> list[tuple[Node, tuple, str]]:
    """Entities, dimensions and measures of the semantic models on ``ref('<model>')``."""
    if owner.kind != "model":
        return []
    on_model = re.compile(r"ref\(\s*['\"]" + re.escape(owner.name) + r"['\"]\s*\)", re.I)
    out = []
    for i, model in enumerate(items(child(root, "semantic_models")[0])):
        if on_model.fullmatch((scalar(child(model, "model")[0]) or "").strip()):
            for part in SEMANTIC_PARTS:
                out += [(n, ("semantic_models", i, part, j), part)
                        for j, n in enumerate(items(child(model, part)[0]))]
    return out


def matches(value: str, old: str, literal_strings: bool = True) -> list[tuple[int, int]]:
    """Where the identifier ``old`` is in ``value``: never inside a quoted SQL string literal
    ('quick-buy'), nor as part of a longer name.

    >>> matches("CASE WHEN kind = 'amount' THEN Amount ELSE amount_x END", "amount")
    [(31, 37)]
    """
    strings = [m.span() for m in re.finditer(r"'(?:[^']|'')*'", value)] if literal_strings else []
    word = re.compile(r"(?<![\w.$])" + re.escape(old) + r"(?![\w$])", re.I)
    return [m.span() for m in word.finditer(value) if not any(a <= m.start() < b for a, b in strings)]


def substitute(value: str, old: str, new: str, literal_strings: bool = True) -> str:
    out, position = [], 0
    for start, end in matches(value, old, literal_strings):
        out += [value[position:start], new]
        position = end
    return "".join(out) + value[position:]


def replace_in_scalar(text: str, node: Node, old: str, new: str, why: str) -> list[Edit]:
    """Edits renaming the identifier ``old`` inside one scalar's bytes (an ``expr:``). A
    single-quoted YAML scalar doubles its quotes, so SQL literals are only skipped in the
    others; the scope check compares the re-parsed value with ``substitute`` on the value."""
    start, end = node.start_mark.index, node.end_mark.index
    literal_strings = node.style != "'"
    return [Edit(start + a, start + b, new, why)
            for a, b in matches(text[start:end], old, literal_strings)]


def rename_columns(text: str, file: str, owner: Owner, renames: dict[str, str]) -> YamlPatch:
    """Rename columns in ``owner``'s ``columns:`` list (the name; its tests, constraints and
    ``data_type`` stay attached to it), in model-level tests' ``column_name:``, and in the
    semantic models on a renamed model (see ``rename_in_semantic_models``)."""
    root = compose(text, file)
    patch = YamlPatch(text)
    for node, path in column_entries(root, owner):
        name_node, _ = child(node, "name")
        for old, new in renames.items():
            if same(scalar(name_node), old):
                patch.edits += replace_in_scalar(text, name_node, scalar(name_node), new,
                                                 f"column {old} renamed to {new}")
                patch.expected[(*path, "name")] = (scalar(name_node), new)
    rename_in_tests(text, root, owner, renames, patch)
    rename_in_semantic_models(text, root, owner, renames, patch)
    return patch


def rename_in_tests(text: str, root: Node | None, owner: Owner, renames: dict[str, str],
                    patch: YamlPatch) -> None:
    """Test arguments naming a renamed column: ``field:`` of a relationships test whose
    ``to:`` is ``owner`` (anywhere in the file), and ``column_name:`` and ``where:`` (SQL)
    inside ``owner``'s own entries."""
    own = [path for _, path in owner_entries(root, owner)]
    for node, path in walk(root):
        inside = any(path[:len(p)] == p for p in own)
        targets = []
        field_node, to_node = child(node, "field")[0], child(node, "to")[0]
        if isinstance(field_node, ScalarNode) and refers_to(scalar(to_node), owner):
            targets.append(("field", field_node, True))
        for key, whole in (("column_name", False), ("where", False)):  # both may be SQL
            found = child(node, key)[0]
            if inside and isinstance(found, ScalarNode):
                targets.append((key, found, whole))
        if inside:  # dbt_utils.unique_combination_of_columns: a list of column names
            targets += [(("combination_of_columns", i), n, True) for i, n in
                        enumerate(items(child(node, "combination_of_columns")[0]))
                        if isinstance(n, ScalarNode)]
        for key, found, whole in targets:
            for old, new in renames.items():
                if whole and not same(found.value, old):
                    continue
                edits = replace_in_scalar(text, found, old, new, f"test {key}: column {old} renamed to {new}")
                if edits:
                    patch.edits += edits
                    where = (*path, *(key if isinstance(key, tuple) else (key,)))
                    before = patch.expected.get(where, (found.value, found.value))
                    patch.expected[where] = (before[0], substitute(before[1], old, new, found.style != "'"))


def rename_in_semantic_models(text: str, root: Node | None, owner: Owner,
                              renames: dict[str, str], patch: YamlPatch) -> None:
    """An entity, dimension or measure keeps its public name (metrics, saved queries, filters
    and dashboards use it): an ``expr:`` naming the column is edited, and one named after
    the column without an ``expr:`` gets ``expr: <new column>`` under its name."""
    for node, path, part in semantic_parts(root, owner):
        expr, _ = child(node, "expr")
        name_node, _ = child(node, "name")
        for old, new in renames.items():
            why = f"{part[:-1] if part != 'entities' else 'entity'} {scalar(name_node)}: column {old} renamed to {new}"
            if expr is not None:
                edits = replace_in_scalar(text, expr, old, new, why)
                if edits:
                    patch.edits += edits
                    before = patch.expected.get((*path, "expr"), (scalar(expr), scalar(expr)))
                    patch.expected[(*path, "expr")] = (
                        before[0], substitute(before[1], old, new, expr.style != "'"))
            elif same(scalar(name_node), old) and not node.flow_style:
                line_end = text.index("\n", name_node.end_mark.index) + 1 \
                    if "\n" in text[name_node.end_mark.index:] else len(text)
                key_column = node.value[0][0].start_mark.column
                insert = ensure_newline(text, line_end, " " * key_column + f"expr: {new}\n")
                patch.edits.append(Edit(line_end, line_end, insert, why))
                patch.expected[(*path, "expr")] = (MISSING, new)


def retype_columns(text: str, file: str, owner: Owner, types: dict[str, str]) -> YamlPatch:
    """The contract's ``data_type:`` of each retyped column of ``owner`` (only where one is
    declared: a column without one has no contract to keep).

    >>> text = "seeds:\\n  - name: items\\n    columns:\\n      - name: price\\n        data_type: double  # EUR\\n"
    >>> print(retype_columns(text, "s.yml", Owner("seed", "items"), {"price": "integer"}).text, end="")
    seeds:
      - name: items
        columns:
          - name: price
            data_type: integer  # EUR
    """
    patch = YamlPatch(text)
    for node, path in column_entries(compose(text, file), owner):
        data_type, _ = child(node, "data_type")
        name = scalar(child(node, "name")[0])
        for column, new_type in types.items():
            if same(name, column) and isinstance(data_type, ScalarNode):
                patch.edits.append(Edit(data_type.start_mark.index, data_type.end_mark.index,
                                        new_type, f"column {column} retyped to {new_type}"))
                patch.expected[(*path, "data_type")] = (data_type.value, new_type)
    return patch


def declare_source_table(text: str, file: str, schema: str, table: str) -> tuple[YamlPatch, str] | None:
    """Declare ``schema.table`` next to the existing sources: a new table under the
    ``sources:`` entry of that schema, else a new entry at the end of ``sources:``. Returns
    the patch and the source's name (``source('<name>', '<table>')`` resolves), or None when
    the file has no ``sources:`` list (see ``new_sources_file``).

    >>> text = "sources:\\n  - name: raw  # landing\\n    schema: main\\n    tables:\\n      - name: orders\\n"
    >>> patch, name = declare_source_table(text, "s.yml", "main", "orders_v2")
    >>> print(patch.text, end=""); name
    sources:
      - name: raw  # landing
        schema: main
        tables:
          - name: orders
          - name: orders_v2
    'raw'
    """
    root = compose(text, file)
    sources, _ = child(root, "sources")
    if not isinstance(sources, SequenceNode) or sources.flow_style or not sources.value:
        return None
    patch = YamlPatch(text)
    for i, entry in enumerate(sources.value):
        name = scalar(child(entry, "name")[0]) or ""
        declared = scalar(child(entry, "schema")[0]) or name
        tables, _ = child(entry, "tables")
        if same(declared, schema) and isinstance(tables, SequenceNode) and tables.value \
                and not tables.flow_style:
            prefix = item_prefix(text, tables.value[-1])
            at, _ = line_after(text, tables.value[-1])
            patch.edits.append(Edit(at, at, ensure_newline(text, at, f"{prefix}name: {table}\n"),
                                    f"declare {schema}.{table} in source {name}"))
            patch.expected[("sources", i, "tables", len(tables.value))] = (MISSING, {"name": table})
            return patch, name
    prefix = item_prefix(text, sources.value[-1])
    pad = " " * len(prefix)
    at, _ = line_after(text, sources.value[-1])
    entry = (f"{prefix}name: {schema}\n{pad}schema: {schema}\n{pad}tables:\n"
             f"{pad}  - name: {table}\n")
    patch.edits.append(Edit(at, at, ensure_newline(text, at, entry), f"declare source {schema}.{table}"))
    patch.expected[("sources", len(sources.value))] = (
        MISSING, {"name": schema, "schema": schema, "tables": [{"name": table}]})
    return patch, schema


def new_sources_file(schema: str, table: str) -> str:
    """A ``sources:`` file for a project that has none.

    >>> print(new_sources_file("pos", "orders_v2"), end="")
    version: 2
    <BLANKLINE>
    sources:
      - name: pos
        schema: pos
        tables:
          - name: orders_v2
    """
    return (f"version: 2\n\nsources:\n  - name: {schema}\n    schema: {schema}\n    tables:\n"
            f"      - name: {table}\n")


def item_prefix(text: str, item: Node) -> str:
    """What precedes a block sequence item's first key on its line ("      - ")."""
    line_start = text.rfind("\n", 0, item.start_mark.index) + 1
    prefix = text[line_start:item.start_mark.index]
    if prefix.strip() != "-":
        raise SpecError("a sequence item that does not start its own line: not edited here")
    return prefix


def line_after(text: str, item: Node) -> tuple[int, int]:
    """An empty span at the start of the line after ``item``'s last content line (so trailing
    comments and blank lines that follow stay after the insertion)."""
    last = len(text[:item.end_mark.index].rstrip())
    newline = text.find("\n", last)
    position = len(text) if newline < 0 else newline + 1
    return position, position


def ensure_newline(text: str, position: int, insert: str) -> str:
    """Inserted lines end as the file's lines do (CRLF or LF), and an insertion at the end of
    a file without a final newline starts a line of its own.

    >>> ensure_newline("a: 1\\r\\n", 6, "b: 2\\n"), ensure_newline("a: 1", 4, "b: 2\\n")
    ('b: 2\\r\\n', '\\nb: 2\\n')
    """
    if "\r\n" in text:
        insert = insert.replace("\n", "\r\n")
    if position == len(text) and text and not text.endswith("\n"):
        return ("\r\n" if "\r\n" in text else "\n") + insert
    return insert
