"""Text edits on the original file: the only way a rule changes a consumer.

sqlglot cannot regenerate SQL with the author's formatting and comments, so rules
decide on the tree and splice replacements at the identifiers' byte offsets.

>>> apply_edits("SELECT user_id FROM a.p", [Edit(7, 14, "account_id AS user_id", "rename"),
...                                         Edit(20, 23, "b.p", "move")])
'SELECT account_id AS user_id FROM b.p'
>>> try:
...     apply_edits("abc", [Edit(0, 2, "x", "a"), Edit(1, 3, "y", "b")])
... except EditConflict as exc:
...     print(exc)
edits overlap at offsets 0-2 and 1-3 ('x' vs 'y')
"""

from __future__ import annotations

from dataclasses import dataclass


class EditConflict(Exception):
    """Two rules want to change overlapping text differently."""


@dataclass(frozen=True, order=True)
class Edit:
    start: int  # offset of the first replaced character
    end: int  # offset after the last replaced character (start == end: an insertion)
    text: str
    why: str

    def line(self, source: str) -> int:
        return source.count("\n", 0, self.start) + 1


def normalize(edits: list[Edit]) -> list[Edit]:
    """Sorted, identical duplicates merged (qualify copies nodes, e.g. GROUP BY 1)."""
    unique: dict[tuple[int, int, str], Edit] = {}
    for edit in edits:
        unique.setdefault((edit.start, edit.end, edit.text), edit)
    ordered = sorted(unique.values())
    for before, after in zip(ordered, ordered[1:]):
        overlapping = after.start < before.end or (
            after.start == before.start and after.end == before.end)
        insert_twice = before.start == before.end == after.start == after.end
        if overlapping or insert_twice:
            raise EditConflict(f"edits overlap at offsets {before.start}-{before.end} and "
                               f"{after.start}-{after.end} ({before.text!r} vs {after.text!r})")
    return ordered


def apply_edits(text: str, edits: list[Edit]) -> str:
    out = []
    position = 0
    for edit in normalize(edits):
        out.append(text[position:edit.start])
        out.append(edit.text)
        position = edit.end
    out.append(text[position:])
    return "".join(out)
