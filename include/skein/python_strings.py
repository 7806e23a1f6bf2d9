"""Python string expressions resolved to text, with the byte spans of their literals.

A Python consumer names its tables in string literals, often built from module constants:
``f"{DATASET}.{TABLE}"`` or ``PREFIX + "plays"``. ``resolve`` turns such an expression into
its text when every part is a literal or a module-level plain string constant, and otherwise
says which part is only known at run time. libcst gives the byte span of each literal, which
is what a later rewrite splices (docs/discovery.md, "Python consumers").

>>> import libcst as cst
>>> module = cst.parse_module('DATASET = "analytics"\\nT = DATASET + ".plays"\\n')
>>> constants = module_constants(module)
>>> constants["T"].text, constants["T"].resolved
('analytics.plays', True)
>>> r = resolve(cst.parse_expression('f"SELECT * FROM {T} WHERE d = {day}"'), constants)
>>> r.resolved, r.reason, r.text
(False, 'run-time part {day}', 'SELECT * FROM analytics.plays WHERE d = {day}')
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import libcst as cst


@dataclass(frozen=True)
class Resolved:
    """The text of a string expression; ``literals`` are the libcst nodes it came from."""

    text: str
    resolved: bool
    reason: str = ""
    literals: tuple[cst.CSTNode, ...] = ()


def is_stringish(node: cst.BaseExpression) -> bool:
    """A literal, f-string or concatenation: a string written in the code itself.

    >>> is_stringish(cst.parse_expression('"a" + b')), is_stringish(cst.parse_expression('b'))
    (True, False)
    """
    if isinstance(node, (cst.SimpleString, cst.FormattedString, cst.ConcatenatedString)):
        return True
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
        return is_stringish(node.left) or is_stringish(node.right)
    return False


def module_constants(module: cst.Module) -> dict[str, Resolved]:
    """Module-level names bound once to a string expression, resolved from earlier ones.

    A name bound twice is not a constant. One with a run-time part is kept, unresolved.

    >>> found = module_constants(cst.parse_module('A = "x"\\nB = "y"\\nB = "z"\\nC = f"{A}{d}"\\n'))
    >>> sorted(found), found["C"].text, found["C"].reason
    (['A', 'C'], 'x{d}', 'run-time part {d}')
    """
    counts: dict[str, int] = {}
    values: dict[str, cst.BaseExpression] = {}
    lines = [s for s in module.body if isinstance(s, cst.SimpleStatementLine)]
    for statement in lines:
        for small in statement.body:
            for name, value in _bound(small):
                counts[name] = counts.get(name, 0) + 1
                values[name] = value
    constants: dict[str, Resolved] = {}
    for name, value in values.items():  # insertion order is the order of first binding
        if counts[name] != 1 or value is None:
            continue
        if (isinstance(value, cst.Name) and value.value in constants) or is_stringish(value):
            # Kept when unresolved too: its uses then say which run-time part they depend on.
            constants[name] = resolve(value, constants)
    return constants


def _bound(small: cst.BaseSmallStatement) -> list[tuple[str, cst.BaseExpression | None]]:
    """Names a module-level statement binds, with the value when it is a plain ``x = value``."""
    if isinstance(small, cst.Assign):
        if len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
            return [(small.targets[0].target.value, small.value)]
        return [(n.value, None) for t in small.targets for n in _names(t.target)]
    if isinstance(small, (cst.AnnAssign, cst.AugAssign)) and isinstance(small.target, cst.Name):
        value = small.value if isinstance(small, cst.AnnAssign) else None
        return [(small.target.value, value)]
    return []


def _names(target: cst.BaseExpression) -> list[cst.Name]:
    if isinstance(target, cst.Name):
        return [target]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for e in target.elements for n in _names(e.value)]
    return []


def resolve(node: cst.BaseExpression, constants: dict[str, Resolved]) -> Resolved:
    """The text of a string expression; parts known only at run time stay as ``{code}``."""
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        if isinstance(value, bytes):
            return Resolved("", False, "a bytes literal", (node,))
        return Resolved(value, True, "", (node,))
    if isinstance(node, cst.ConcatenatedString):
        return _join([resolve(node.left, constants), resolve(node.right, constants)])
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
        return _join([resolve(node.left, constants), resolve(node.right, constants)])
    if isinstance(node, cst.FormattedString):
        return _join([_fstring_part(p, node, constants) for p in node.parts])
    if isinstance(node, cst.Name) and node.value in constants:
        return constants[node.value]
    code = cst.Module([]).code_for_node(node)
    return Resolved("{" + code + "}", False, "run-time part {" + code + "}")


def _join(parts: list[Resolved]) -> Resolved:
    reasons = [p.reason for p in parts if not p.resolved]
    return Resolved("".join(p.text for p in parts), not reasons, "; ".join(reasons),
                    tuple(n for p in parts for n in p.literals))


def _fstring_part(part: cst.BaseFormattedStringContent, owner: cst.FormattedString,
                  constants: dict[str, Resolved]) -> Resolved:
    if isinstance(part, cst.FormattedStringText):
        return Resolved(_unescape(part.value, owner.prefix), True, "", (owner,))
    assert isinstance(part, cst.FormattedStringExpression)
    if part.conversion is not None or part.format_spec is not None:
        code = cst.Module([]).code_for_node(part)
        return Resolved(code, False, f"formatted part {code}")
    found = resolve(part.expression, constants)
    if isinstance(part.expression, cst.Name) and part.expression.value in constants:
        return Resolved(found.text, found.resolved, found.reason, (owner,) + found.literals)
    return found


def _unescape(raw: str, prefix: str) -> str:
    """The text an f-string's literal part stands for: escapes and doubled braces undone.

    Python's own parser does the escapes (hand-written unescaping gets ``\\N{...}`` wrong).

    >>> _unescape(r"a\\tb {{x}}", "f"), _unescape(r"a\\tb", "rf")
    ('a\\tb {x}', 'a\\\\tb')
    """
    text = raw.replace("{{", "{").replace("}}", "}")
    if "r" in prefix.lower() or "\\" not in text:
        return text
    return ast.literal_eval('"""' + text.replace('"', '\\"') + '"""')


def function_constants(function: cst.FunctionDef, outer: dict[str, Resolved]) -> dict[str, Resolved]:
    """The constants inside a function: the module's, minus the names the function binds
    itself, plus its own names bound once (``query = "SELECT ..."``) to a string expression.

    >>> f = cst.parse_module('def f(T, d):\\n    q = f"SELECT * FROM {S}.{T}"\\n    n = 1\\n').body[0]
    >>> found = function_constants(f, {"S": Resolved("s", True), "T": Resolved("t", True)})
    >>> sorted(found), found["q"].text, found["q"].resolved
    (['S', 'q'], 'SELECT * FROM s.{T}', False)
    """
    bindings = _LocalBindings()
    function.body.visit(bindings)
    for param in (*function.params.params, *function.params.posonly_params,
                  *function.params.kwonly_params):
        bindings.other.add(param.name.value)
    for star in (function.params.star_arg, function.params.star_kwarg):
        if isinstance(star, cst.Param):
            bindings.other.add(star.name.value)
    bound = bindings.other | set(bindings.values)
    constants = {k: v for k, v in outer.items() if k not in bound}
    for name, values in bindings.values.items():
        if len(values) == 1 and name not in bindings.other and is_stringish(values[0]):
            constants[name] = resolve(values[0], constants)
    return constants


class _LocalBindings(cst.CSTVisitor):
    """Names a function body binds: ``values`` by plain ``x = ...``, ``other`` by anything else
    (loops, ``with``, imports, ``+=``...). Nested functions and classes are their own scopes."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, list[cst.BaseExpression]] = {}
        self.other: set[str] = set()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.other.add(node.name.value)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self.other.add(node.name.value)
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            if isinstance(target.target, cst.Name) and len(node.targets) == 1:
                self.values.setdefault(target.target.value, []).append(node.value)
            else:
                self.other.update(n.value for n in _names(target.target))

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self.other.update(n.value for n in _names(node.target))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.other.update(n.value for n in _names(node.target))

    def visit_For(self, node: cst.For) -> None:
        self.other.update(n.value for n in _names(node.target))

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self.other.update(n.value for n in _names(node.target))

    def visit_AsName(self, node: cst.AsName) -> None:  # with ... as x, except ... as x, import
        self.other.update(n.value for n in _names(node.name))

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self.other.update(n.value for n in _names(node.target))

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        if node.asname is None and isinstance(node.name, cst.Name):
            self.other.add(node.name.value)

    def visit_Global(self, node: cst.Global) -> None:
        self.other.update(n.name.value for n in node.names)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        self.other.update(n.name.value for n in node.names)
