"""A Jinja environment for other teams' templates: sandboxed, with bounded operations.

dbt renders models with ``jinja2.sandbox.SandboxedEnvironment``; so does Skein. The sandbox
refuses attribute walks to Python internals (``cycler.__init__.__globals__``), but leaves
operations unbounded: ``'x' * 10**9`` allocates a gigabyte and ``10**10**10`` computes for
minutes. ``BoundedSandbox`` refuses those before they run. It is one layer: the renderer
also runs in a child process with a memory, CPU and time limit (``skein.jinja_process``), which
catches what no check here foresees (a loop doubling a string, a filter's own allocation).

>>> env = BoundedSandbox()
>>> env.from_string("{{ 'ab' * 2 }} {{ 2 ** 10 }} {{ range(3) | join(',') }}").render()
'abab 1024 0,1,2'
>>> len(env.from_string("{{ 10**10**10 }}").render())  # Jinja's ** is left-associative
101
>>> for payload in ("{{ cycler.__init__.__globals__.os }}", "{{ 'x' * 10**9 }}",
...                 "{{ 10 ** (10 ** 10) }}", "{{ range(10**9) | list }}", "{{ 'x'.ljust(10**9) }}",
...                 "{{ [1] * 10**9 }}", "{{ '%0999999999d' % 1 }}"):
...     try:
...         env.from_string(payload).render()
...     except Exception as exc:
...         print(type(exc).__name__)
SecurityError
SecurityError
SecurityError
OverflowError
SecurityError
SecurityError
SecurityError
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Sized
from typing import Any

from jinja2 import StrictUndefined, pass_environment, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.filters import do_center, do_indent, do_wordwrap, sync_do_join
from jinja2.sandbox import SandboxedEnvironment

MAX_LENGTH = 1 << 20  # characters (or items) one operation may build: a consumer file's limit
MAX_INT_BITS = 4096  # ~1,233 digits: no SQL needs a larger number
# %-format and str.format widths and precisions above this are refused (they allocate)
_WIDTH = re.compile(r"(\d{7,})")
# str methods whose result length their arguments choose
_SIZED_METHODS = {"ljust", "rjust", "center", "zfill", "expandtabs", "format", "format_map",
                  "join", "replace"}


def _too_long(length: float, what: str) -> None:
    if length > MAX_LENGTH:
        raise SecurityError(f"{what} would build {int(length):,} characters or items, more than "
                            f"{MAX_LENGTH:,}: refused")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _check_repeat(left: Any, right: Any) -> None:
    """``seq * n``, ``n * seq`` and ``int * int`` with bounded results."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int):
            _too_long(len(seq) * max(times, 0), "repetition")
    if isinstance(left, int) and isinstance(right, int) and \
            left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"a product of more than {MAX_INT_BITS} bits: refused")


def _check_power(base: Any, exponent: Any) -> None:
    """``a ** b`` on integers: the result's size is ``b * log2(a)`` bits, known before."""
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise SecurityError(f"a power of more than {MAX_INT_BITS} bits: refused")


def _check_width(text: str) -> None:
    if _WIDTH.search(text):
        raise SecurityError("a format width or precision of a million or more: refused")


class BoundedSandbox(SandboxedEnvironment):
    """``SandboxedEnvironment`` that also bounds ``*``, ``**``, ``+``, ``%``, the str methods
    that size their result from an argument, and the filters that do (``join``, ``center``,
    ``indent``, ``wordwrap``, ``format``); undefined names are errors (as dbt's)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        options.setdefault("undefined", StrictUndefined)
        super().__init__(**options)
        self.filters.update(join=_bounded_join, center=_bounded_center, indent=_bounded_indent,
                            wordwrap=_bounded_wordwrap, format=_bounded_format)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            _too_long(_length(left) + _length(right), "concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_width(left)
        return super().call_binop(context, operator, left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # Modules, classes and code objects have nothing a template needs; refusing them
        # whole closes walks the base class would only refuse at the ``__x__`` step.
        if isinstance(obj, (types.ModuleType, type, types.CodeType, types.FrameType)):
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        if isinstance(__obj, types.BuiltinMethodType) and __obj.__name__ in _SIZED_METHODS \
                and isinstance(getattr(__obj, "__self__", None), str):
            args = _check_str_method(__obj.__self__, __obj.__name__, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _check_str_method(text: str, name: str, args: tuple, kwargs: dict) -> tuple:
    """Refuse a str method call whose result would be too long; ``join``'s iterable is
    read here (bounded) so its length is known, and passed on as a list."""
    numbers = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
    if name in ("ljust", "rjust", "center", "zfill"):
        _too_long(max(numbers, default=0), f"str.{name}")
    elif name == "expandtabs":
        _too_long(text.count("\t") * max(numbers, default=8) + len(text), "str.expandtabs")
    elif name in ("format", "format_map"):
        _check_width(text)
    elif name == "replace" and len(args) >= 2 and isinstance(args[1], str):
        _too_long((text.count(args[0]) + 1) * len(args[1]) + len(text)
                  if isinstance(args[0], str) else 0, "str.replace")
    elif name == "join" and args:
        items = _bounded_list(args[0])
        _too_long(sum(len(str(i)) for i in items) + len(text) * len(items), "str.join")
        return (items, *args[1:])
    return args


def _bounded_list(iterable: Any) -> list:
    items = []
    for item in iterable:
        items.append(item)
        _too_long(len(items), "a list")
    return items


@pass_eval_context
def _bounded_join(eval_ctx, value, d: str = "", attribute=None):
    items = _bounded_list(value)
    _too_long(sum(len(str(i)) for i in items) + len(str(d)) * len(items), "join")
    return sync_do_join(eval_ctx, items, d, attribute)


def _bounded_center(value: str, width: int = 80) -> str:
    _too_long(width if isinstance(width, int) else 0, "center")
    return do_center(value, width)


def _bounded_indent(s: str, width: Any = 4, first: bool = False, blank: bool = False) -> str:
    size = width if isinstance(width, int) else _length(width)
    _too_long(size * (str(s).count("\n") + 1) + len(str(s)), "indent")
    return do_indent(s, width, first, blank)


@pass_environment
def _bounded_wordwrap(environment, s: str, width: int = 79, break_long_words: bool = True,
                      wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
    _too_long(len(str(s)) * (1 + len(wrapstring or "\n")), "wordwrap")
    return do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)


def _bounded_format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_width(str(value))
    if isinstance(args, Sized) and kwargs and args:
        raise SecurityError("format takes positional or keyword arguments, not both")
    return str(value) % (kwargs or args)


def plain(value: Any, depth: int = 0) -> Any:
    """What may leave the renderer: JSON values; anything else as a short string.

    >>> plain({"schema": "marts", "n": [1, 2.5, None], "odd": object})
    {'schema': 'marts', 'n': [1, 2.5, None], 'odd': "<class 'object'>"}
    """
    if value is None or isinstance(value, (bool, int, float)):
        return value if not isinstance(value, int) or value.bit_length() <= 64 else str(value)[:40]
    if isinstance(value, str):
        return value[:MAX_LENGTH]
    if depth < 8 and isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value[:1000]]
    if depth < 8 and isinstance(value, dict):
        return {str(k)[:200]: plain(v, depth + 1) for k, v in list(value.items())[:1000]}
    return str(value)[:200]
