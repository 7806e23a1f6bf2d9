"""What an agent is given and what it returns: frozen, serialisable data.

>>> req = RewriteRequest(consumer_id="r/q.sql", text="SELECT user_id FROM a.p", dialect="duckdb",
...                      source="a.p", target="b.p", columns={"user_id": "account_id"},
...                      schemas={"a.p": {"user_id": "BIGINT"}, "b.p": {"account_id": "BIGINT"}})
>>> req.source_columns, req.target_columns
(['user_id'], ['account_id'])
>>> req.mapping_for("user_id"), req.mapping_for("other")
('account_id', 'other')
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RewriteRequest(BaseModel):
    """One consumer and the change it must follow."""

    model_config = ConfigDict(frozen=True)
    consumer_id: str
    text: str  # the file as it is on disk (dbt Jinja included)
    dialect: str
    source: str  # schema.table, lowercase
    target: str
    columns: dict[str, str | None]  # old column -> expression over the target (dialect of the campaign)
    columns_dialect: str = "duckdb"  # dialect the `columns` expressions are written in
    schemas: dict[str, dict[str, str]]  # the catalog: dataset -> {column: type}
    default_schema: str = "main"
    # dbt: relation of each ref()/source() the project declares, to rewrite Jinja calls
    dbt_relations: dict[str, str] = Field(default_factory=dict)  # "source('a','b')" -> "a.b"
    dbt_project_root: str | None = None
    consumer_path: str | None = None

    @property
    def source_columns(self) -> list[str]:
        return list(self.schemas.get(self.source, {}))

    @property
    def target_columns(self) -> list[str]:
        return list(self.schemas.get(self.target, {}))

    def mapping_for(self, column: str) -> str | None:
        """The expression replacing ``column``; unchanged columns map to themselves."""
        column = column.lower()
        mapped = _lowercase_keys(self.columns)
        return mapped[column] if column in mapped else column


_LOWERCASE: dict[int, tuple[dict, dict]] = {}


def _lowercase_keys(columns: dict[str, str | None]) -> dict[str, str | None]:
    """``columns`` with lowercase keys, remembered per dict (the rules ask per reference)."""
    found = _LOWERCASE.get(id(columns))
    if found is None or found[0] is not columns:
        if len(_LOWERCASE) > 1024:
            _LOWERCASE.clear()
        found = _LOWERCASE[id(columns)] = (columns, {k.lower(): v for k, v in columns.items()})
    return found[1]


class Change(BaseModel):
    """One edit, in words a reviewer reads next to the diff."""

    model_config = ConfigDict(frozen=True)
    line: int
    before: str
    after: str
    why: str


class Patch(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["patch"] = "patch"
    consumer_id: str
    agent: str  # "rule" | "llm"
    original: str
    text: str
    changes: list[Change]

    @property
    def diff(self) -> str:
        return unified_diff(self.original, self.text, self.consumer_id)

    @property
    def base_hash(self) -> str:
        """SHA-256 of the text the patch was computed from (``original``): the applier writes
        the patch only over exactly that content.

        >>> Patch(consumer_id="r/q.sql", agent="rule", original="", text="x", changes=[]).base_hash[:12]
        'e3b0c44298fc'
        """
        import hashlib

        return hashlib.sha256(self.original.encode("utf-8")).hexdigest()

    @property
    def rationale(self) -> str:
        return "\n".join(f"line {c.line}: {c.before} -> {c.after} ({c.why})" for c in self.changes)


class Escalation(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["escalation"] = "escalation"
    consumer_id: str
    agent: str
    reason: str


class Unchanged(BaseModel):
    """The consumer does not read the source: nothing to do, and nothing for a human either
    (issue 19). It stays as it is; the dry run still runs its code against the new world."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["unchanged"] = "unchanged"
    consumer_id: str
    agent: str
    reason: str


RewriteResult = Patch | Escalation | Unchanged


def unified_diff(old: str, new: str, name: str) -> str:
    """A unified diff a reviewer reads (``a/<id>`` vs ``b/<id>``), in git's form.

    difflib leaves a last line without its newline as it is, which glued it to the next line
    of the diff (a view's whole change read as one line): git's marker closes it instead.

    >>> print(unified_diff("select 1 from a", "select 1 from b", "v"), end="")
    --- a/v
    +++ b/v
    @@ -1 +1 @@
    -select 1 from a
    \\ No newline at end of file
    +select 1 from b
    \\ No newline at end of file
    """
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"a/{name}", tofile=f"b/{name}")
    return "".join(line if line.endswith("\n") else f"{line}\n{NO_NEWLINE}\n" for line in lines)


NO_NEWLINE = "\\ No newline at end of file"
