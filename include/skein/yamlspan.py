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
# there. A real campaign has a few hundred values; settings files a few thousand.
MAX_VALUES = 100_000
MAX_FILE_BYTES = 1 << 20  # 1 MiB: campaign and settings files are hand-written


class _Budget:
    def __init__(self, file: str, limit: int = MAX_VALUES):
        self.file, self.left = file, limit

    def spend(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise SpecError(f"more than {MAX_VALUES:,} values (YAML aliases expanding?): refused",
                            file=self.file, line=node.start_mark.line + 1)


def load_yaml_with_lines(text: str, file: str, *, strict: bool = True) -> YamlDoc:
    """Parse one YAML document; what is not YAML (syntax, an unknown tag) raises
    ``YamlSyntaxError``, a ``SpecError`` with a line.

    ``strict``: duplicate keys and merge keys are ``SpecError``s. Without it they are read as
    PyYAML's ``safe_load`` reads them: merge keys merge (the mapping's own keys win), the
    last of repeated keys wins, and a key's line is the line of the key that won.
    """
    doc = YamlDoc(data=None, file=file)
    try:
        node = yaml.compose(text, Loader=_LOADER)
        if node is not None:
            constructor = yaml.SafeLoader("")  # only used to build scalars with YAML's own rules
            doc.data = _build(node, (), doc.lines, constructor, file, strict, (), _Budget(file))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        if line is None and isinstance(getattr(exc, "position", None), int):  # a ReaderError
            line = _line_at(text, exc.position)
        if line is not None:  # at the end of a file without a final newline libyaml says one more
            line = min(line, _line_at(text, len(text)))
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise YamlSyntaxError(problem, file=file, line=line) from None
    except RecursionError:  # the pure-Python composer recurses (libyaml stops at 1000 levels)
        raise YamlSyntaxError("nested too deeply", file=file, line=1) from None
    return doc


def _line_at(text: str, offset: int) -> int:
    """The line of ``offset`` as YAML counts lines (CR, LF, CRLF, NEL, LS, PS break lines)."""
    return len(_LINE_BREAK.split(text[:offset]))


_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def load_yaml_file(path: str | Path) -> YamlDoc:
    """Read a YAML file: too large, not UTF-8 or unreadable is a ``SpecError`` naming it.

    >>> import tempfile, os
    >>> bad = os.path.join(tempfile.mkdtemp(), "c.yaml")
    >>> _ = open(bad, "wb").write(b"id: ok\\nname: caf\\xe9\\n")
    >>> load_yaml_file(bad)
    Traceback (most recent call last):
    skein.errors.SpecError: ...c.yaml:2: not UTF-8 text (byte 0xe9): save the file as UTF-8
    """
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # /dev/zero never ends, a FIFO blocks
            raise SpecError("not a regular file", file=str(path))
        size = info.st_size
        if size > MAX_FILE_BYTES:
            raise SpecError(f"file is {size / 1e6:.1f} MB, more than a campaign file can be "
                            f"({MAX_FILE_BYTES >> 20} MiB): refused", file=str(path), line=1)
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read file: {exc.strerror}", file=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start].decode("utf-8")
        line = _line_at(before, len(before))
        raise SpecError(f"not UTF-8 text (byte {data[exc.start]:#04x}): save the file as UTF-8",
                        file=str(path), line=line) from None
    return load_yaml_with_lines(text, str(path))


# Campaign files are a few levels deep; anything deeper is a mistake (or an attack).
MAX_DEPTH = 64


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
        if not strict:
            constructor.flatten_mapping(node)  # merged keys first, then the mapping's own
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            # merge keys would hide where a value came from (checked before building: the
            # scalar constructor has no constructor for them)
            if strict and (key_node.tag == _MERGE or key_node.value == "<<"):
                raise SpecError("YAML merge keys (<<) are not supported",
                                file=file, line=key_node.start_mark.line + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("a mapping key must be a plain value, not a list or mapping",
                                file=file, line=key_node.start_mark.line + 1)
            key = _scalar(key_node, constructor, file, path)
            if strict and key in out:
                raise SpecError(f"duplicate key {key!r}", file=file,
                                line=key_node.start_mark.line + 1,
                                field=_field((*path, key)))
            out[key] = _build(value_node, (*path, key), lines, constructor, file, strict, above,
                              budget)
            lines[(*path, key)] = key_node.start_mark.line + 1
            if not isinstance(key, str):  # pydantic names a ``~`` or ``2.5`` key 'None', '2.5'
                lines.setdefault((*path, str(key)), key_node.start_mark.line + 1)
        return out
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
        raise SpecError(f"a number of {digits} digits: too long to read (at most "
                        f"{sys.get_int_max_str_digits()})", file=file,
                        line=node.start_mark.line + 1, field=_field(path) or None) from None


def _field(path: Path_) -> str:
    """A key path as errors name it (keys that are not printable text quoted)."""
    return ".".join(str(p) if str(p).isprintable() else repr(str(p)) for p in path)
