"""What every rule sees: the original text, the change, and the consumer's dialect."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from skein.rewrite.request import RewriteRequest


class Escalate(Exception):
    """A rule cannot rewrite this consumer; the message says why, for a human."""


@dataclass
class RuleContext:
    text: str  # the text positions refer to (masked for dbt: same offsets as the file)
    request: RewriteRequest
    jinja_tables: dict[str, str] = field(default_factory=dict)  # placeholder -> relation
    jinja_spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # placeholder -> span
    tokens: list | None = None  # the text's tokens, when the caller has them from its parse

    @property
    def dialect(self) -> str:
        return self.request.dialect

    def span(self, node: exp.Expression) -> tuple[int, int]:
        """Byte range of a node written as one token run: from its first identifier to its last."""
        starts, ends = [], []
        for ident in node.find_all(exp.Identifier):
            if "start" in ident.meta:
                starts.append(ident.meta["start"])
                ends.append(ident.meta["end"] + 1)
        if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
            star = node if isinstance(node, exp.Star) else node.this
            if "start" in star.meta:
                ends.append(star.meta["end"] + 1)
                starts.append(star.meta["start"])
        if not starts:
            raise Escalate(f"cannot locate `{node.sql()}` in the text")
        return min(starts), max(ends)

    def written(self, ident: exp.Identifier) -> str:
        return self.text[ident.meta["start"]:ident.meta["end"] + 1]

    def line(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1
