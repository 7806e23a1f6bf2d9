"""What a Python file reads from the warehouse: SQL in strings, tables by name, their columns.

The first step of Python consumers (issue 21): ``find_python_refs`` walks a file with libcst
and reports, as frozen data, every database call whose SQL or table name is written in the
code (a literal, an f-string or ``+`` built from module constants), each with its line,
column and the byte spans of the literals a rewrite would splice; SQL is read with the
project's lineage (``skein.lineage``, under the parse budget) for the tables it mentions.
An expression with a run-time part is reported unresolved with the reason. Nothing here
imports Airflow: operators are recognised by their keywords, not their classes.

>>> refs = find_python_refs('''
... import pandas as pd
... SCHEMA = "analytics"
... def load(con, day):
...     df = pd.read_sql(f"SELECT user_id, ms FROM {SCHEMA}.plays", con)
...     late = con.execute(f"SELECT * FROM {SCHEMA}.plays WHERE d = '{day}'")
...     return df["user_id"]
... ''')
>>> [(f.kind, f.call, f.line, f.resolved, f.tables) for f in refs.findings]
[('sql', 'pd.read_sql', 5, True, ('analytics.plays',)), ('sql', 'con.execute', 6, False, ())]
>>> refs.findings[1].reason, [(c.column, c.via, c.line) for c in refs.columns]
('run-time part {day}', [('user_id', 'subscript', 7)])
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import libcst as cst
from libcst.helpers import get_full_name_for_node
from libcst.metadata import ByteSpanPositionProvider, MetadataWrapper, PositionProvider

from skein.errors import first_line
from skein.lineage import analyze_sql, mentioned_datasets
from skein.python_strings import (Resolved, function_constants, is_stringish, module_constants,
                                  resolve)

# Calls whose first argument is SQL. The generic ones (``execute``, ``sql``, ``run``, ``text``)
# count only when the argument is written as a string: ``subprocess.run(cmd)`` is no query.
SQL_CALLS = {"execute", "executemany", "sql", "read_sql", "read_sql_query", "text",
             "read_database", "get_records", "get_first", "get_pandas_df", "get_df", "run",
             "fetchdf"}
SQL_CALLS_BY_NAME = {"read_sql", "read_sql_query", "read_database", "get_records",
                     "get_pandas_df", "get_df", "fetchdf"}
# Calls whose first argument (or ``table=``/``table_name=``) names a table.
TABLE_CALLS = {"table", "read_sql_table", "resolve_table", "insert_rows"}
TABLE_KEYWORDS = ("table", "table_name")
# Attributes of a DataFrame that are not columns, for ``df.x`` reads that are not calls.
NOT_COLUMNS = {"columns", "shape", "dtypes", "iloc", "loc", "at", "iat", "index", "T", "values",
               "empty", "schema", "write", "rdd", "na", "size", "ndim", "str", "dt", "cat",
               "plot", "style", "attrs", "flags", "axes", "sparse", "stat", "writeTo",
               "session", "sparkSession", "sql_ctx", "isStreaming", "storageLevel", "writeStream"}
# Syntax nesting (CPython's ast) a file may have: real code stays far below (the material's
# deepest file: see tests/test_python_refs.py), libcst's walks fail a little above 400.
MAX_DEPTH = 250
NESTED = "nested too deeply to walk (a long chain of operators or brackets)"
MAX_SOURCE_BYTES = 1 << 20  # skein.catalog.MAX_CONSUMER_BYTES: the largest consumer read


@dataclass(frozen=True)
class Finding:
    """One reference: ``kind`` is ``sql``, ``table`` or ``template`` (a ``.sql`` file name)."""

    kind: str
    call: str
    line: int
    column: int
    spans: tuple[tuple[int, int], ...]  # (start, end) byte offsets of the literals
    text: str
    resolved: bool
    reason: str = ""
    tables: tuple[str, ...] = ()  # for SQL: the tables it mentions, ``schema.table`` lowercased


@dataclass(frozen=True)
class ColumnUse:
    """A column named after a table read, in the same function: ``df["c"]``, ``F.col("c")``."""

    column: str
    via: str  # subscript, attribute, col, columns=, target_fields=, column_mapping=
    line: int
    span: tuple[int, int]
    source_line: int  # the line of the read it follows (0: more than one read could be meant)


@dataclass(frozen=True)
class PythonRefs:
    findings: tuple[Finding, ...] = ()
    columns: tuple[ColumnUse, ...] = ()
    error: str | None = None  # the file could not be read as Python: nothing above is known


def find_python_refs(source: str, dialect: str = "duckdb") -> PythonRefs:
    """Every SQL string, table name and column use ``source`` passes to database calls."""
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        return PythonRefs(error=f"too large: over {MAX_SOURCE_BYTES:,} bytes")
    refused = too_deep(source)
    if refused:
        return PythonRefs(error=refused)
    try:
        wrapper = MetadataWrapper(cst.parse_module(source), unsafe_skip_copy=True)
    except (cst.ParserSyntaxError, ValueError) as exc:
        return PythonRefs(error=f"does not parse as Python: {first_line(exc)}")
    except RecursionError:
        return PythonRefs(error=NESTED)
    try:
        finder = _Finder(wrapper, dialect)
        wrapper.visit(finder)
    except RecursionError:  # libcst walks its tree recursively: a long `"a" + "a" + ...` chain
        return PythonRefs(error=NESTED)
    return PythonRefs(tuple(sorted(finder.findings, key=lambda f: (f.line, f.column))),
                      tuple(sorted(finder.columns, key=lambda c: (c.line, c.span))))


def too_deep(source: str) -> str | None:
    """Why a file must not reach libcst, or ``None``. libcst's native parser overflows its
    stack (the process dies, no exception) on a chain of 20,000 ``+``, and its visitors
    recurse; CPython's own parser has guards, so it measures the nesting first.

    >>> too_deep("x = 1 + 2"), too_deep("x = " + " + ".join(["1"] * 400))
    (None, 'nested 401 levels deep, limit 250')
    """
    try:
        tree = ast.parse(source)
    except RecursionError:
        return NESTED
    except (SyntaxError, ValueError, MemoryError) as exc:
        return f"does not parse as Python: {first_line(exc) or type(exc).__name__}"
    deepest, stack = 0, [(tree, 0)]
    while stack:  # iterative: a recursive walk would fail on the very input it measures
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return f"nested {nesting_depth(tree):,} levels deep, limit {MAX_DEPTH:,}"
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return None


def nesting_depth(tree: ast.AST) -> int:
    """The deepest level of a syntax tree, walked without recursion."""
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def sql_tables(sql: str, dialect: str) -> tuple[str, ...]:
    """Tables a SQL text mentions, by the lineage's parse; by name chains when it fails.

    >>> sql_tables("INSERT INTO a.t SELECT x FROM s.u JOIN v USING (k)", "duckdb")
    ('a.t', 's.u', 'v')
    >>> sql_tables("SELECT %(x)s FROM s.u", "postgres")
    ('s.u',)

    Airflow renders Jinja in ``sql=`` first: a ``{{ ... }}`` part names no table here.

    >>> sql_tables("SELECT * FROM {{ params.t }} JOIN s.u ON d = '{{ ds }}'", "duckdb")
    ('s.u',)
    """
    plain = _JINJA.sub(JINJA_PLACEHOLDER, sql)
    lineage = analyze_sql(plain, dialect, {})
    found = set(lineage.table_lines)
    if lineage.produces:
        found.add(lineage.produces)
    if not found and lineage.error and not lineage.error.startswith("too complex"):
        found = set(mentioned_datasets(plain))
    return tuple(sorted(t for t in found if JINJA_PLACEHOLDER not in t))


def call_name(call: cst.Call) -> str:
    """``pd.read_sql`` for ``pd.read_sql(...)``; ``spark.read.table``; ``?.table`` if odd.

    >>> call_name(cst.parse_expression("get_spark().read.table('a')"))
    'get_spark.read.table'
    """
    name = get_full_name_for_node(call.func)
    if name is None and isinstance(call.func, cst.Attribute):
        name = "?." + call.func.attr.value
    return name or "?"


def _last(name: str) -> str:
    return name.rpartition(".")[2].rpartition(")")[2]


class _Finder(cst.CSTVisitor):
    """One pass: calls give findings; each function's assignments tie names to reads."""

    METADATA_DEPENDENCIES = (PositionProvider, ByteSpanPositionProvider)

    def __init__(self, wrapper: MetadataWrapper, dialect: str):
        super().__init__()
        self.dialect = dialect
        self.findings: list[Finding] = []
        self.columns: list[ColumnUse] = []
        self.scopes: list[_Scope] = [_Scope(module_constants(wrapper.module))]

    # -- positions -------------------------------------------------------------------
    def line_col(self, node: cst.CSTNode) -> tuple[int, int]:
        pos = self.get_metadata(PositionProvider, node).start
        return pos.line, pos.column

    def span(self, node: cst.CSTNode) -> tuple[int, int]:
        found = self.get_metadata(ByteSpanPositionProvider, node)
        return found.start, found.start + found.length

    def spans(self, literals: tuple[cst.CSTNode, ...]) -> tuple[tuple[int, int], ...]:
        return tuple(sorted({self.span(n) for n in literals}))

    # -- scopes: a function's reads and the names bound to them ---------------------------
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.append(_Scope(function_constants(node, self.scopes[-1].constants)))

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.scopes.pop()

    def visit_Assign(self, node: cst.Assign) -> None:
        read = _innermost_call(node.value)
        if read is None or len(node.targets) != 1 or not isinstance(node.targets[0].target, cst.Name):
            return
        self.scopes[-1].pending[read] = node.targets[0].target.value

    # -- calls -----------------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        name = call_name(node)
        last = _last(name)
        before = len(self.findings)
        if last in SQL_CALLS and node.args and node.args[0].keyword is None:
            self.sql_argument(node, name, last, node.args[0].value)
        if last in TABLE_CALLS:
            self.table_argument(node, name)
        for arg in node.args:
            self.keyword_argument(node, name, arg)
        own = self.findings[-1].line if len(self.findings) > before else 0
        if own:
            self.scopes[-1].bind(node, own)
        self.column_call(node, last, own)

    def sql_argument(self, node: cst.Call, name: str, last: str, value: cst.BaseExpression) -> None:
        if is_stringish(value) or self.is_constant(value):
            self.add_string("sql", name, node, value)
        elif last in SQL_CALLS_BY_NAME and isinstance(value, (cst.Name, cst.Attribute)):
            self.add("sql", name, node, Resolved("", False, "SQL held in a name bound at run time: "
                                                 + cst.Module([]).code_for_node(value)))

    def table_argument(self, node: cst.Call, name: str) -> None:
        args = [a for a in node.args if a.keyword is None][:1]
        args += [a for a in node.args if a.keyword and a.keyword.value in TABLE_KEYWORDS]
        for arg in args[:1]:
            if is_stringish(arg.value) or self.is_constant(arg.value):
                self.add_string("table", name, node, arg.value, self.schema_keyword(node))

    def schema_keyword(self, node: cst.Call) -> Resolved | None:
        for arg in node.args:
            if arg.keyword and arg.keyword.value == "schema" and self.is_constant_or_string(arg.value):
                return resolve(arg.value, self.scopes[-1].constants)
        return None

    def keyword_argument(self, node: cst.Call, name: str, arg: cst.Arg) -> None:
        keyword = arg.keyword.value if arg.keyword else None
        if keyword in TABLE_KEYWORDS and name.endswith("Operator") and \
                self.is_constant_or_string(arg.value):
            self.add_string("table", f"{name}({keyword}=)", node, arg.value)
        elif keyword == "sql":
            for item in _items(arg.value):
                if self.is_constant_or_string(item):
                    self.add_string("sql", f"{name}(sql=)", node, item)
        elif keyword == "configuration" and isinstance(arg.value, cst.Dict):
            query = _dict_get(_dict_get(arg.value, "query"), "query")
            for item in _items(query) if query is not None else ():
                if self.is_constant_or_string(item):
                    self.add_string("sql", f"{name}(configuration=query)", node, item)

    def is_constant(self, node: cst.BaseExpression) -> bool:
        return isinstance(node, cst.Name) and node.value in self.scopes[-1].constants

    def is_constant_or_string(self, node: cst.BaseExpression) -> bool:
        return is_stringish(node) or self.is_constant(node)

    def add_string(self, kind: str, name: str, node: cst.Call, value: cst.BaseExpression,
                   schema: Resolved | None = None) -> None:
        found = resolve(value, self.scopes[-1].constants)
        if schema is not None and found.resolved and "." not in found.text:
            found = Resolved(f"{schema.text}.{found.text}", schema.resolved, schema.reason,
                             found.literals + schema.literals)
        if kind == "sql" and found.resolved and _is_template(found.text):
            kind = "template"
        elif _last(name) in SQL_CALLS_BY_NAME and found.resolved and _NAME.fullmatch(found.text):
            kind = "table"  # pandas' read_sql (and sqlframe's get_df) read a table given its name
        self.add(kind, name, node, found)

    def add(self, kind: str, name: str, node: cst.Call, found: Resolved) -> None:
        tables: tuple[str, ...] = ()
        if kind == "sql" and found.resolved:
            tables = sql_tables(found.text, self.dialect)
        line, column = self.line_col(node)
        self.findings.append(Finding(kind, name, line, column, self.spans(found.literals),
                                     found.text, found.resolved, found.reason, tables))

    # -- columns ---------------------------------------------------------------------
    def column_call(self, node: cst.Call, last: str, own: int) -> None:
        """Columns a call names; its keywords' belong to its own table read when it has one."""
        scope = self.scopes[-1]
        if not scope.reads:
            return
        if last == "col" and node.args and isinstance(node.args[0].value, cst.SimpleString):
            self.add_column(node.args[0].value, "col", scope.only_read())
        for arg in node.args:
            keyword = arg.keyword.value if arg.keyword else None
            if keyword in ("columns", "target_fields"):
                for item in _items(self.local_value(arg.value)):
                    if isinstance(item, cst.SimpleString):
                        self.add_column(item, f"{keyword}=", own or scope.only_read())
            elif keyword == "column_mapping" and isinstance(arg.value, cst.Dict):
                for element in arg.value.elements:  # check operators: {column: {check: ...}}
                    if isinstance(getattr(element, "key", None), cst.SimpleString):
                        self.add_column(element.key, "column_mapping=", own or scope.only_read())

    def local_value(self, node: cst.BaseExpression) -> cst.BaseExpression:
        """A name bound to a list literal in this function stands for the list."""
        if isinstance(node, cst.Name):
            return self.scopes[-1].lists.get(node.value, node)
        return node

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        parent_value = self.scopes[-1].assign_value
        if isinstance(node.target, cst.Name) and isinstance(parent_value, (cst.List, cst.Tuple)):
            self.scopes[-1].lists[node.target.value] = parent_value

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        first = node.body[0] if node.body else None
        self.scopes[-1].assign_value = first.value if isinstance(first, cst.Assign) else None

    def visit_Subscript(self, node: cst.Subscript) -> None:
        read = self.bound_read(node.value)
        if read is None or len(node.slice) != 1:
            return
        index = node.slice[0].slice
        if isinstance(index, cst.Index):
            for item in _items(index.value) if isinstance(index.value, cst.List) else [index.value]:
                if isinstance(item, cst.SimpleString):
                    self.add_column(item, "subscript", read)

    def visit_Attribute(self, node: cst.Attribute) -> None:
        read = self.bound_read(node.value)
        if read is not None and node.attr.value not in NOT_COLUMNS and \
                not self.scopes[-1].is_called(node):
            line, _ = self.line_col(node.attr)
            self.columns.append(ColumnUse(node.attr.value, "attribute", line,
                                          self.span(node.attr), read))

    def visit_Call_func(self, node: cst.Call) -> None:
        self.scopes[-1].called.add(id(node.func))

    def bound_read(self, node: cst.BaseExpression) -> int | None:
        """The read a frame expression comes from: its name, or a row filter of it (``df[m]``)."""
        while isinstance(node, cst.Subscript):
            node = node.value
        if isinstance(node, cst.Name):
            return self.scopes[-1].names.get(node.value)
        return None

    def add_column(self, literal: cst.SimpleString, via: str, read: int) -> None:
        value = literal.evaluated_value
        if isinstance(value, str):
            line, _ = self.line_col(literal)
            self.columns.append(ColumnUse(value, via, line, self.span(literal), read))


class _Scope:
    """A function's reads: the line of each, and the names bound to a read's result."""

    def __init__(self, constants: dict[str, Resolved]) -> None:
        self.constants = constants  # the names that hold strings here, resolved
        self.pending: dict[cst.Call, str] = {}  # a read's call -> the name it is assigned to
        self.names: dict[str, int] = {}
        self.reads: list[int] = []
        self.lists: dict[str, cst.BaseExpression] = {}
        self.assign_value: cst.BaseExpression | None = None
        self.called: set[int] = set()

    def bind(self, call: cst.Call, line: int) -> None:
        self.reads.append(line)
        name = self.pending.get(call)
        if name is not None:
            self.names[name] = line

    def only_read(self) -> int:
        return self.reads[0] if len(set(self.reads)) == 1 else 0

    def is_called(self, node: cst.Attribute) -> bool:
        return id(node) in self.called


def _innermost_call(node: cst.BaseExpression) -> cst.Call | None:
    """The first call of a chain: ``spark.read.table("t").filter(x)`` gives the ``table`` call."""
    found = None
    while isinstance(node, cst.Call):
        found = node
        func = node.func
        node = func.value if isinstance(func, cst.Attribute) else func
        while isinstance(node, cst.Attribute):
            node = node.value
    return found


def _items(node: cst.BaseExpression | None) -> list[cst.BaseExpression]:
    if isinstance(node, (cst.List, cst.Tuple)):
        return [e.value for e in node.elements if isinstance(e, cst.Element)]
    return [node] if node is not None else []


def _dict_get(node: cst.BaseExpression | None, key: str) -> cst.BaseExpression | None:
    if not isinstance(node, cst.Dict):
        return None
    for element in node.elements:
        if isinstance(element, cst.DictElement) and isinstance(element.key, cst.SimpleString) \
                and element.key.evaluated_value == key:
            return element.value
    return None


_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
JINJA_PLACEHOLDER = "skein_jinja_part"
_NAME = re.compile(r"\w+(\.\w+)*")
_INCLUDE = re.compile(r"\{%-?\s*include\s.*?-?%\}", re.DOTALL)


def _is_template(text: str) -> bool:
    """A ``.sql`` file name in place of SQL (Airflow renders it from ``template_searchpath``),
    or only a Jinja ``{% include %}`` of one: the SQL is in another file.

    >>> _is_template("create_table.sql"), _is_template("SELECT 1 -- x.sql")
    (True, False)
    >>> _is_template("{% include 'resources/q.sql' %}"), _is_template("{% include P %} WHERE 1")
    (True, False)
    """
    stripped = text.strip()
    if _INCLUDE.fullmatch(stripped):
        return True
    return stripped.lower().endswith(".sql") and not any(c.isspace() for c in stripped)
