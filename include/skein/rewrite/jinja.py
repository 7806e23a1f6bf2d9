"""Hide dbt Jinja behind same-length SQL so offsets in the parsed tree are file offsets.

``{% ... %}`` and ``{# ... #}`` become spaces (newlines kept): both branches of an
``{% if %}`` stay in the SQL, which is what a rewrite must cover anyway.
``{{ ref() }}``/``{{ source() }}``/``{{ this }}`` become a placeholder table name
registered as that relation; other ``{{ ... }}`` are rendered on their own and padded
when the result fits, else replaced by a placeholder (a rule touching it escalates).

>>> m = mask_jinja("select a from {{ source('s', 't') }} {% if x %}where b{% endif %}",
...                lambda expr: {"source('s', 't')": "s.t"}[expr])
>>> m.text
'select a from _j0                              where b           '
>>> m.tables
{'_j0': 's.t'}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
RELATION_CALL = re.compile(r"^\s*(ref|source)\s*\(.*\)\s*$|^\s*this\s*$", re.S)


@dataclass
class JinjaMask:
    text: str
    tables: dict[str, str] = field(default_factory=dict)  # placeholder -> relation
    calls: dict[str, str] = field(default_factory=dict)  # placeholder -> the Jinja expression
    placeholder_spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    spans: list[tuple[int, int]] = field(default_factory=list)  # every Jinja span (start, end)

    def opaque(self, original: str) -> list[tuple[int, str]]:
        """(line, expression) of each ``{{ ... }}`` whose rendering is not in the masked text
        (a placeholder that is no known relation, or blanked): what it reads is unknown.

        >>> m = mask_jinja("select * from {{ tables() }}", lambda e: "a_very_long.relation_name")
        >>> m.opaque("select * from {{ tables() }}")
        [(1, '{{ tables() }}')]
        """
        found = []
        for start, end in self.spans:
            raw, masked = original[start:end], self.text[start:end].strip()
            if raw.startswith("{{") and (not masked or (masked.startswith("_j") and masked not in self.tables)):
                found.append((original.count("\n", 0, start) + 1, raw))
        return found

    def inside_jinja(self, start: int, end: int) -> bool:
        """The range overlaps Jinja without being exactly one placeholder span."""
        for s, e in self.spans:
            if start < e and end > s and not (start == s and end == e):
                return True
        return False


def _blank(text: str) -> str:
    return "".join("\n" if ch == "\n" else " " for ch in text)


def mask_jinja(text: str, render: Callable[[str], str], keep_offsets: bool = True) -> JinjaMask:
    """``render(expr)`` renders one ``{{ expr }}`` with the project's context.

    ``keep_offsets=False`` (for checking, not editing) inserts every rendered expression
    whole, even when it is longer than its Jinja text.
    """
    mask = JinjaMask(text="")
    out = []
    position = 0
    for number, match in enumerate(_JINJA.finditer(text)):
        start, end = match.span()
        raw = match.group(0)
        out.append(text[position:start])
        position = end
        mask.spans.append((start, end))
        if raw.startswith("{{"):
            out.append(_mask_expression(raw, number, render, mask, keep_offsets))
            if f"_j{number}" in mask.tables:
                mask.placeholder_spans[f"_j{number}"] = (start, end)
        else:
            out.append(_blank(raw))
    out.append(text[position:])
    mask.text = "".join(out)
    return mask


def _mask_expression(raw: str, number: int, render, mask: JinjaMask, keep_offsets: bool) -> str:
    expression = raw[2:-2].strip()
    placeholder = f"_j{number}"
    if RELATION_CALL.match(expression):
        relation = render(expression)
        if len(placeholder) <= len(raw):
            mask.tables[placeholder] = relation.lower()
            mask.calls[placeholder] = expression
            return placeholder.ljust(len(raw))
    try:
        rendered = render(expression)
    except Exception:  # noqa: BLE001 - any render problem: keep a placeholder, rules escalate
        rendered = None
    if rendered is not None and not keep_offsets:
        return str(rendered)
    if rendered is not None and "\n" not in rendered and len(rendered) <= len(raw):
        return str(rendered).ljust(len(raw))
    return placeholder.ljust(len(raw)) if len(placeholder) <= len(raw) else _blank(raw)
