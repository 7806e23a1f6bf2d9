"""The verification gate both agents pass: a proposal is accepted only if every check passes.

A check is a plain callable ``(request, new_text) -> CheckResult``, one concern each
(like sqlglot's optimizer rules); a ``Gate`` runs them all and returns a frozen
``GateVerdict`` whose ``feedback`` is what the LLM agent reads on its next attempt.

>>> from skein.rewrite.request import RewriteRequest
>>> req = RewriteRequest(consumer_id="r/q.sql", text="SELECT user_id FROM analytics.plays\\n",
...                      dialect="duckdb", source="analytics.plays", target="analytics_v2.plays",
...                      columns={"user_id": "account_id"},
...                      schemas={"analytics.plays": {"user_id": "BIGINT"},
...                               "analytics_v2.plays": {"account_id": "BIGINT"}})
>>> gate = Gate([unchanged_check, locality_check])
>>> verdict = gate.verify(req, req.text)
>>> verdict.passed, [r.name for r in verdict.results if not r.passed]
(False, ['unchanged'])
>>> print(verdict.feedback)
- unchanged: the text is identical to the original; return a refusal if no change is possible
>>> gate.verify(req, "SELECT account_id AS user_id FROM analytics_v2.plays\\n").passed
True

Which checks apply depends on the consumer's kind (``consumer_kind``): SQL consumers go
through the scope check (``skein.agents.scope_check``) and a dry run on sample data
(``skein.agents.dry_run``); Python consumers cannot be parsed as SQL, so the scope check
is replaced by ``locality_check`` (every changed line names something the migration is
about, the old dataset name is gone, the file still parses). A check that does not apply
returns ``skipped=True`` and passes.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, computed_field

from skein.agents.checks import PYTHON_SUFFIXES, CheckResult, consumer_kind  # noqa: F401 - the gate's API
from skein.rewrite.request import RewriteRequest

if TYPE_CHECKING:
    import pyarrow

Check = Callable[[RewriteRequest, str], CheckResult]


class GateVerdict(BaseModel):
    """Every check's result; passed only if all passed.

    >>> v = GateVerdict(results=[CheckResult(name="a", passed=True),
    ...                          CheckResult(name="b", passed=False, feedback="x\\ny")])
    >>> v.passed, v.failed
    (False, ['b'])
    >>> print(v.feedback)
    - b: x
      y
    """

    model_config = ConfigDict(frozen=True)
    results: list[CheckResult]

    @computed_field
    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if not r.passed]

    @property
    def feedback(self) -> str:
        """The failed checks, one bullet each (multi-line feedback indented under it)."""
        lines = []
        for r in self.results:
            if not r.passed:
                body = (r.feedback or "failed").strip().replace("\n", "\n  ")
                lines.append(f"- {r.name}: {body}")
        return "\n".join(lines)


class Gate:
    """Runs every check on a proposal (not stopping at the first failure, so the feedback
    is complete). A check that raises fails closed: the proposal is rejected and the
    error is recorded as that check's feedback, so one broken check cannot let a patch
    through nor stop a campaign.
    """

    def __init__(self, checks: Sequence[Check]):
        if not checks:
            raise ValueError("Gate needs at least one check: an empty gate would accept anything")
        self.checks = tuple(checks)

    def verify(self, request: RewriteRequest, new_text: str) -> GateVerdict:
        results = []
        for check in self.checks:
            try:
                result = check(request, new_text)
            except Exception as exc:  # noqa: BLE001 - fail closed, see class docstring
                result = CheckResult(name=check_name(check), passed=False,
                                     feedback=f"the check itself failed ({type(exc).__name__}: {exc})")
            results.append(result)
        return GateVerdict(results=results)

    def __repr__(self) -> str:
        return f"Gate([{', '.join(check_name(c) for c in self.checks)}])"


def check_name(check: Check) -> str:
    """A check's ``name`` attribute, else its function name without ``_check``."""
    name = getattr(check, "name", None) or getattr(check, "__name__", None) or type(check).__name__
    return name.removesuffix("_check")


def default_gate(samples: Mapping[str, pyarrow.Table] | None = None) -> Gate:
    """The gate both agents use: unchanged, scope (SQL), locality (Python), dry run (SQL).

    ``samples``: the dry run's data (``skein.simulation.worlds.WarehouseSamples``, or small
    Arrow tables); without them the dry run skips.

    >>> default_gate()
    Gate([unchanged, scope, locality, dry_run])
    """
    from skein.agents.dry_run import DryRun  # a check of its own, on skein.agents.checks

    return Gate([unchanged_check, scope_check, locality_check,
                 DryRun(samples if samples is not None else {})])


# ---- checks ---------------------------------------------------------------------------------


def unchanged_check(request: RewriteRequest, new_text: str) -> CheckResult:
    """An empty or identical text is no rewrite."""
    if not new_text.strip():
        return CheckResult(name="unchanged", passed=False,
                           feedback="the text is empty; return the whole file, or a refusal")
    if new_text == request.text:
        return CheckResult(name="unchanged", passed=False, feedback=(
            "the text is identical to the original; return a refusal if no change is possible"))
    return CheckResult(name="unchanged", passed=True)


def scope_check(request: RewriteRequest, new_text: str) -> CheckResult:
    """SQL consumers: ``skein.agents.scope_check.check_scope`` (only references to the
    source changed, outputs kept, everything else byte-identical). Skipped for Python."""
    if consumer_kind(request) != "sql":
        return CheckResult(name="scope", passed=True, skipped=True,
                           feedback="not SQL: locality_check applies instead")
    from skein.agents.scope_check import check_patch

    verdict = check_patch(request, new_text)  # dbt files: Jinja masked in the project's context
    return CheckResult(name="scope", passed=verdict.ok, feedback="\n".join(verdict.problems))


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def locality_check(request: RewriteRequest, new_text: str) -> CheckResult:
    """Python consumers: a diff-based stand-in for the SQL scope check.

    Every removed or added line must name the source or target dataset, or an old or new
    column of the mapping (for a line edited in place: among the words that changed; blank
    and punctuation-only lines added or removed are free); the source's
    ``schema.table`` must be gone; a file that parsed must still parse. Skipped for SQL.

    >>> from skein.rewrite.request import RewriteRequest
    >>> old = "df = read('analytics.plays')\\nx = df['ms_played']\\nprint('hi')\\n"
    >>> r = RewriteRequest(consumer_id="t/job.py", text=old, dialect="duckdb", source="analytics.plays",
    ...                    target="analytics_v2.plays", columns={"ms_played": "duration_s * 1000"},
    ...                    schemas={})
    >>> good = "df = read('analytics_v2.plays')\\nx = df['duration_s'] * 1000\\nprint('hi')\\n"
    >>> locality_check(r, good).passed
    True
    >>> print(locality_check(r, good.replace("'hi'", "'hello'")).feedback)
    line 3 changed but names nothing this migration is about: print('hi') -> print('hello')
    """
    if consumer_kind(request) != "python":
        return CheckResult(name="locality", passed=True, skipped=True,
                           feedback="SQL: the scope check applies")
    vocabulary = _migration_vocabulary(request)
    problems = []
    matcher = difflib.SequenceMatcher(a=request.text.splitlines(), b=new_text.splitlines(),
                                      autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        removed, added = matcher.a[i1:i2], matcher.b[j1:j2]
        if tag == "equal":
            continue
        if len(removed) == len(added):  # line-for-line edits: what changed must be migration words
            problems += [f"line {i1 + n} changed but names nothing this migration is about: "
                         f"{old.strip()} -> {new.strip()}"
                         for n, (old, new) in enumerate(zip(removed, added, strict=True), 1)
                         if not _changed_words(old, new) & vocabulary]
            continue
        problems += [f"line {i1 + n} removed but names nothing this migration is about: {old.strip()}"
                     for n, old in enumerate(removed, 1) if _stray(old, vocabulary)]
        problems += [f"new line {j1 + n} names nothing this migration is about: {new.strip()}"
                     for n, new in enumerate(added, 1) if _stray(new, vocabulary)]
    source = re.compile(rf"(?<![\w.]){re.escape(request.source)}(?![\w])", re.IGNORECASE)
    for number, line in enumerate(new_text.splitlines(), 1):
        if source.search(line):
            problems.append(f"line {number} still reads {request.source}: {line.strip()}")
    error = _syntax_error(new_text)
    if error is not None and _syntax_error(request.text) is None:
        problems.append(f"the new text is not valid Python: line {error.lineno}: {error.msg}")
    return CheckResult(name="locality", passed=not problems, feedback="\n".join(problems))


_TOKEN = re.compile(r"\w+|[^\w\s]")


def _changed_words(old: str, new: str) -> set[str]:
    """Lowercased words in the tokens that differ between two versions of a line.

    >>> sorted(_changed_words("x = df['ms_played'].head(10)", "x = df['duration_s'].head(10)"))
    ['duration_s', 'ms_played']
    """
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    changed: set[str] = set()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            changed.update(t.lower() for t in a[i1:i2] + b[j1:j2] if _WORD.fullmatch(t))
    return changed


def _stray(line: str, vocabulary: set[str]) -> bool:
    """A line with words, none of them about the migration."""
    words = {w.lower() for w in _WORD.findall(line)}
    return bool(words) and not words & vocabulary


def _migration_vocabulary(request: RewriteRequest) -> set[str]:
    words = set()
    for dataset in (request.source, request.target):
        words.update(_WORD.findall(dataset))
    for old, new in request.columns.items():
        words.update(_WORD.findall(old))
        words.update(_WORD.findall(new or ""))
    return {w.lower() for w in words}


def _syntax_error(text: str) -> SyntaxError | None:
    try:
        ast.parse(text)
    except SyntaxError as exc:
        return exc
    return None
