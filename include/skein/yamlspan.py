"""Load YAML and remember the line of every key, so errors can name it.

PyYAML's safe loader drops positions; its composer keeps them on nodes. We build
plain Python values from the nodes ourselves and record ``path -> line`` on the
way (PyYAML offers no option for this, ruamel's round-trip types would leak into
every model).

>>> doc = load_yaml_with_lines("a: 1\\nb:\\n  c: [x, y]\\n", "f.yaml")
>>> doc.data
{'a': 1, 'b': {'c': ['x', 'y']}}
>>> doc.line_of(("b", "c", 1))
3
>>> doc.line_of(("b", "missing"))
2

Campaign files are read strictly: duplicate keys and merge keys (``<<``) are errors, since
they would hide where a value came from. Other files may follow YAML's own rules instead:

>>> text = "base: &b {port: 1, host: h}\\nconn:\\n  <<: *b\\n  port: 2\\n  port: 3\\n"
>>> load_yaml_with_lines(text, "f.yaml", strict=False).data["conn"]
{'port': 3, 'host': 'h'}
>>> load_yaml_with_lines(text, "f.yaml")
Traceback (most recent call last):
skein.errors.SpecError: f.yaml:3: YAML merge keys (<<) are not supported
"""

from __future__ import annotations

import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skein.errors import SpecError, YamlSyntaxError, first_line

Path_ = tuple[str | int, ...]


@dataclass
class YamlDoc:
    data: Any
    file: str
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """Line (1-based) of ``path``, or of its nearest ancestor that exists."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


# libyaml's loader when PyYAML was built with it (10x faster; DAG files parse every campaign
# on every parse), with the same marks (lines) and rules as the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"  # an unquoted ``<<`` key

# Aliases let a 1 KB file name billions of values (a "billion laughs" bomb): PyYAML composes
# it as a small shared graph, and only building values expands it, so the budget is counted
# there. A real campaign has a few hundred values; settings files a few thousand. Counting
# values is not enough: one 2,000-character anchor repeated 80,000 times is under both the
# file and the value limit and expands to 160 MB, so the expanded text is counted too.
MAX_VALUES = 100_000
MAX_FILE_BYTES = 1 << 20  # 1 MiB: campaign and settings files are hand-written
MAX_EXPANDED_BYTES = 4 << 20  # 4 MiB of scalar text once aliases are expanded
QUOTE_CHARS = 60  # how much of a key or value an error message may quote


def shorten(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` cut for a one-line message: error messages never carry an expanded value.

    >>> shorten("x" * 100, 10)
    'xxxxxxxxxx... (100 characters)'
    """
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class _Budget:
    def __init__(self, file: str, limit: int = MAX_VALUES, size: int = MAX_EXPANDED_BYTES):
        self.file, self.left, self.bytes_left = file, limit, size
        self.limit, self.size = limit, size

    def spend(self, node: yaml.Node, value: bool = True) -> None:
        self.left -= value
        if isinstance(node, yaml.ScalarNode):
            self.bytes_left -= len(node.value) + 1
        if self.left < 0:
            raise SpecError(f"more than {self.limit:,} values (YAML aliases expanding?): refused",
                            file=self.file, line=node.start_mark.line + 1)
        if self.bytes_left < 0:
            raise SpecError(f"more than {self.size >> 20} MiB of text once YAML "
                            "aliases are expanded: refused", file=self.file,
                            line=node.start_mark.line + 1)


@dataclass(frozen=True)
class Limits:
    """How much one file may hold; every YAML Skein reads is loaded under one of these."""
    file_bytes: int = MAX_FILE_BYTES
    values: int = MAX_VALUES
    expanded_bytes: int = MAX_EXPANDED_BYTES
    what: str = "a campaign file"  # for the message about the file's size


# Consumer repositories' YAML (dbt_project.yml, profiles.yml, schema and sources files,
# catalog-info.yaml): a large dbt project documents thousands of columns in one file.
CONSUMER_LIMITS = Limits(file_bytes=4 << 20, values=400_000, expanded_bytes=16 << 20,
                         what="a YAML file Skein reads")


def load_yaml_with_lines(text: str, file: str, *, strict: bool = True,
                         limits: Limits = Limits()) -> YamlDoc:
    """Parse one YAML document; what is not YAML (syntax, an unknown tag) raises
    ``YamlSyntaxError``, a ``SpecError`` with a line.

    ``strict``: duplicate keys and merge keys are ``SpecError``s. Without it they are read as
    PyYAML's ``safe_load`` reads them: merge keys merge (the mapping's own keys win), the
    last of repeated keys wins, and a key's line is the line of the key that won.
    """
    docs = _load(text, file, strict, limits, many=False)
    return docs[0] if docs else YamlDoc(data=None, file=file)


def load_yaml_documents(text: str, file: str, *, strict: bool = False,
                        limits: Limits = CONSUMER_LIMITS) -> list[YamlDoc]:
    """Every document of a multi-document stream (``---``), under one budget.

    >>> [d.data for d in load_yaml_documents("a: 1\\n---\\n- b\\n", "f.yaml")]
    [{'a': 1}, ['b']]
    """
    return _load(text, file, strict, limits, many=True)


def _load(text: str, file: str, strict: bool, limits: Limits, many: bool) -> list[YamlDoc]:
    budget = _Budget(file, limits.values, limits.expanded_bytes)
    constructor = yaml.SafeLoader("")  # only used to build scalars with YAML's own rules
    docs: list[YamlDoc] = []
    try:
        nodes = yaml.compose_all(text, Loader=_LOADER) if many else [yaml.compose(text, Loader=_LOADER)]
        for node in nodes:
            doc = YamlDoc(data=None, file=file)
            if node is not None:
                _refuse_early(node, budget)
                doc.data = _build(node, (), doc.lines, constructor, file, strict, (), budget)
            docs.append(doc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        if line is None and isinstance(getattr(exc, "position", None), int):  # a ReaderError
            line = _line_at(text, exc.position)
        if line is not None:  # at the end of a file without a final newline libyaml says one more
            line = min(line, _line_at(text, len(text)))
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise YamlSyntaxError(shorten(problem, 200), file=file, line=line) from None
    except RecursionError:  # the pure-Python composer recurses (libyaml stops at 1000 levels)
        raise YamlSyntaxError("nested too deeply", file=file, line=1) from None
    return docs


def check_expansion(text: str, file: str, limits: Limits = CONSUMER_LIMITS) -> None:
    """For readers that keep PyYAML's ``safe_load`` (and its messages): a ``SpecError`` when
    ``text`` is over ``limits`` (size, values or text once aliases are expanded), found on
    the composed graph before anything is built. Syntax errors are left to the reader.

    >>> check_expansion("a: &a [x, x]\\nb: [*a, *a]\\n", "f.yaml", Limits(values=5))
    Traceback (most recent call last):
    skein.errors.SpecError: f.yaml:1: more than 5 values (YAML aliases expanding?): refused
    """
    if len(text) > limits.file_bytes:
        raise SpecError(f"file is {len(text) / 1e6:.1f} MB, more than {limits.what} can be "
                        f"({limits.file_bytes >> 20} MiB): refused", file=file, line=1)
    budget = _Budget(file, limits.values, limits.expanded_bytes)
    try:
        for node in yaml.compose_all(text, Loader=_LOADER):
            if node is not None:
                _refuse_early(node, budget)
    except yaml.YAMLError:
        return
    except RecursionError:
        raise YamlSyntaxError("nested too deeply", file=file, line=1) from None


def _line_at(text: str, offset: int) -> int:
    """The line of ``offset`` as YAML counts lines (CR, LF, CRLF, NEL, LS, PS break lines)."""
    return len(_LINE_BREAK.split(text[:offset]))


_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def read_yaml_text(path: str | Path, limits: Limits = Limits()) -> str:
    """A YAML file's text: too large, not UTF-8 or unreadable is a ``SpecError`` naming it.

    >>> import tempfile, os
    >>> bad = os.path.join(tempfile.mkdtemp(), "c.yaml")
    >>> _ = open(bad, "wb").write(b"id: ok\\nname: caf\\xe9\\n")
    >>> read_yaml_text(bad)
    Traceback (most recent call last):
    skein.errors.SpecError: ...c.yaml:2: not UTF-8 text (byte 0xe9): save the file as UTF-8
    """
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # /dev/zero never ends, a FIFO blocks
            raise SpecError("not a regular file", file=str(path))
        size = info.st_size
        if size > limits.file_bytes:
            raise SpecError(f"file is {size / 1e6:.1f} MB, more than {limits.what} can be "
                            f"({limits.file_bytes >> 20} MiB): refused", file=str(path), line=1)
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read file: {exc.strerror}", file=str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start].decode("utf-8")
        line = _line_at(before, len(before))
        raise SpecError(f"not UTF-8 text (byte {data[exc.start]:#04x}): save the file as UTF-8",
                        file=str(path), line=line) from None


def load_yaml_file(path: str | Path, *, strict: bool = True, limits: Limits = Limits()) -> YamlDoc:
    """Read one YAML document from a file under ``limits`` (``read_yaml_text``'s errors)."""
    return load_yaml_with_lines(read_yaml_text(path, limits), str(path), strict=strict,
                                limits=limits)


# Campaign files are a few levels deep; anything deeper is a mistake (or an attack).
MAX_DEPTH = 64


def _sizes(node: yaml.Node, memo: dict[int, tuple[int, int]], depth: int = 0) -> tuple[int, int]:
    """(values, bytes) ``node`` expands to, counted over its distinct nodes (an alias is the
    same node again, so memoised). Past ``MAX_DEPTH``, or around a recursive anchor, it counts
    nothing: ``_build`` refuses those with their own message."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = (0, 0)
    if depth > MAX_DEPTH:
        return 0, 0
    if isinstance(node, yaml.ScalarNode):
        values, size = 1, len(node.value) + 1
    else:
        values, size = 1, 0
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) \
            else node.value
        for child in children:
            child_values, child_size = _sizes(child, memo, depth + 1)
            values, size = values + child_values, size + child_size
    memo[id(node)] = (values, size)
    return values, size


def _refuse_early(root: yaml.Node, budget: _Budget) -> None:
    """Refuse a document that expands past the budget before building anything, naming the
    line where ``_build`` would stop: subtrees that fit are spent whole, so a bomb costs its
    distinct nodes (milliseconds), not the 400,000 values ``_build`` would make first."""
    memo: dict[int, tuple[int, int]] = {}
    values, size = _sizes(root, memo)
    if values <= budget.left and size <= budget.bytes_left:
        return
    trial = _Budget(budget.file, budget.limit, budget.size)
    trial.left, trial.bytes_left = budget.left, budget.bytes_left
    stack: list[tuple[yaml.Node, bool]] = [(root, True)]
    while stack:  # each step spends at least one value or byte: it ends, by raising
        node, is_value = stack.pop()
        values, size = _sizes(node, memo)
        if (values if is_value else 0) <= trial.left and size <= trial.bytes_left:
            trial.left -= values if is_value else 0
            trial.bytes_left -= size
            continue
        trial.spend(node, value=is_value)
        if isinstance(node, yaml.MappingNode):
            stack.extend(item for key, value in reversed(node.value)
                         for item in ((value, True), (key, False)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, True) for item in reversed(node.value))


def _build(node: yaml.Node, path: Path_, lines: dict, constructor: yaml.SafeLoader, file: str,
           strict: bool, above: tuple[int, ...], budget: _Budget):
    """Plain values from ``node``; ``above`` are the ids of the collections it is inside."""
    budget.spend(node)
    lines[path] = node.start_mark.line + 1
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in above:
            raise SpecError("a YAML alias refers to a collection it is inside (recursive "
                            "anchor)", file=file, line=node.start_mark.line + 1)
        if len(above) >= MAX_DEPTH:
            raise SpecError(f"nested more than {MAX_DEPTH} levels deep", file=file,
                            line=node.start_mark.line + 1)
        above = (*above, id(node))
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(node, path, lines, constructor, file, strict, above, budget)
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, constructor, file, strict, above, budget)
                for i, item in enumerate(node.value)]
    return _scalar(node, constructor, file, path)


def _scalar(node: yaml.ScalarNode, constructor: yaml.SafeLoader, file: str, path: Path_):
    """A scalar with YAML's own rules; one that Python refuses to build (an integer of more
    than 4,300 digits: ``int()``'s limit against quadratic-time conversion) is a ``SpecError``.

    >>> load_yaml_with_lines("a: 1\\nb: " + "9" * 5000, "f.yaml")
    Traceback (most recent call last):
    skein.errors.SpecError: f.yaml:2: b: a number of 5000 digits: too long to read (at most 4300)
    """
    try:
        return constructor.construct_object(node, deep=True)
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
        digits = sum(ch.isdigit() for ch in node.value)
        field = ".".join(shorten(str(p)) if str(p).isprintable() else shorten(repr(str(p)))
                         for p in path)
        raise SpecError(f"a number of {digits} digits: too long to read (at most "
                        f"{sys.get_int_max_str_digits()})", file=file,
                        line=node.start_mark.line + 1, field=field or None) from None


def _build_mapping(node: yaml.MappingNode, path: Path_, lines: dict, constructor, file: str,
                   strict: bool, above: tuple[int, ...], budget: _Budget) -> dict:
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE or (strict and key_node.value == "<<"):
            # merge keys would hide where a value came from (checked before building: the
            # scalar constructor has no constructor for them)
            if strict:
                raise SpecError("YAML merge keys (<<) are not supported",
                                file=file, line=key_node.start_mark.line + 1)
            _merge(out, value_node, path, lines, constructor, file, above, budget,
                   key_node.start_mark.line + 1)
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            raise SpecError("a mapping key must be a plain value, not a list or mapping",
                            file=file, line=key_node.start_mark.line + 1)
        budget.spend(key_node, value=False)  # a key repeated through aliases is text too
        key = _scalar(key_node, constructor, file, path)
        if strict and key in out:
            raise SpecError(f"duplicate key {shorten(repr(key))}", file=file,
                            line=key_node.start_mark.line + 1,
                            field=".".join(shorten(str(p)) if str(p).isprintable()
                                           else shorten(repr(str(p))) for p in (*path, key)))
        out[key] = _build(value_node, (*path, key), lines, constructor, file, strict, above,
                          budget)
        lines[(*path, key)] = key_node.start_mark.line + 1
        if not isinstance(key, str):  # pydantic names a ``~`` or ``2.5`` key 'None', '2.5'
            lines.setdefault((*path, str(key)), key_node.start_mark.line + 1)
    return out


def _merge(out: dict, value_node: yaml.Node, path: Path_, lines: dict, constructor, file: str,
           above: tuple[int, ...], budget: _Budget, line: int) -> None:
    """``<<: *a`` or ``<<: [*a, *b]``: keys not yet set, earlier mappings first (YAML's merge
    rules). Built here, value by value under the budget, rather than by PyYAML's
    ``flatten_mapping``, which copies key lists and so grows exponentially on nested merges."""
    sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
    for source in sources:
        if not isinstance(source, yaml.MappingNode):
            raise SpecError("a merge key (<<) must name a mapping or a list of mappings",
                            file=file, line=line)
        merged = _build(source, path, {}, constructor, file, False, above, budget)
        for key, value in merged.items():
            if key not in out:
                out[key] = value
                lines[(*path, key)] = line
