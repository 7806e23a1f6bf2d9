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
through the scope check (``skein.agents.scope_check``) and a DuckDB dry run; Python
consumers cannot be parsed as SQL, so the scope check is replaced by ``locality_check``
(every changed line names something the migration is about, the old dataset name is gone,
the file still parses). A check that does not apply returns ``skipped=True`` and passes.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import sqlglot
from pydantic import BaseModel, ConfigDict, computed_field
from sqlglot import exp

from skein.rewrite.request import RewriteRequest
from skein.lineage import dataset_name

PYTHON_SUFFIXES = (".py", ".ipynb")


class CheckResult(BaseModel):
    """What one check says about one proposed text.

    >>> CheckResult(name="scope", passed=False, feedback="line 3 changed a comment").passed
    False
    """

    model_config = ConfigDict(frozen=True)
    name: str
    passed: bool
    feedback: str = ""  # why it failed, in words a model (or a reviewer) can act on
    skipped: bool = False  # the check does not apply here (counts as passed)


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


def default_gate(samples: SampleData | None = None) -> Gate:
    """The gate both agents use: unchanged, scope (SQL), locality (Python), dry run (SQL).

    >>> default_gate()
    Gate([unchanged, scope, locality, dry_run])
    """
    return Gate([unchanged_check, scope_check, locality_check, DuckDBDryRun(samples or {})])


def consumer_kind(request: RewriteRequest) -> Literal["sql", "python"]:
    """``python`` for ``.py``/``.ipynb`` files (or dialect ``python``), else ``sql``.

    >>> from skein.rewrite.request import RewriteRequest
    >>> r = RewriteRequest(consumer_id="team/jobs/report.py", text="", dialect="duckdb", source="a.b",
    ...                    target="c.d", columns={}, schemas={})
    >>> consumer_kind(r)
    'python'
    """
    name = (request.consumer_path or request.consumer_id).lower()
    if name.endswith(PYTHON_SUFFIXES) or request.dialect.lower() in ("python", "pandas"):
        return "python"
    return "sql"


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


# ---- dry run on DuckDB ------------------------------------------------------------------------

SampleData = Mapping[str, Sequence[Mapping[str, Any]]]  # dataset -> rows ({column: value})
Output = tuple[list[str], list[tuple]]  # a query's column names and rows


@dataclass(frozen=True)
class DuckDBDryRun:
    """Executable parity on sample rows: the original on the source, the new text on the target.

    ``samples`` holds rows of the source, of the target (the same data, migrated) and of any
    other dataset the consumer reads; column types come from ``request.schemas``. The
    original runs in an in-memory DuckDB without the target table, the new text in one
    without the source, so a leftover source reference fails. Output column names and the
    sorted rows must match (numbers compared as floats to 9 significant digits).

    Minimal on purpose: one query (the file's last statement's query, a ``CREATE VIEW``'s
    body), dbt ``ref``/``source`` substituted from ``request.dbt_relations``, no other
    Jinja, file access disabled. Skipped when it cannot judge (no samples, not SQL, the
    original does not run). The full simulation replaces it behind the same interface.

    >>> from skein.rewrite.request import RewriteRequest
    >>> r = RewriteRequest(consumer_id="r/q.sql", text="SELECT user_id, ms_played FROM analytics.plays",
    ...                    dialect="duckdb", source="analytics.plays", target="analytics_v2.plays",
    ...                    columns={"user_id": "account_id", "ms_played": "duration_s * 1000"},
    ...                    schemas={"analytics.plays": {"user_id": "BIGINT", "ms_played": "BIGINT"},
    ...                             "analytics_v2.plays": {"account_id": "BIGINT",
    ...                                                    "duration_s": "DOUBLE"}})
    >>> dry_run = DuckDBDryRun({"analytics.plays": [{"user_id": 1, "ms_played": 1500}],
    ...                         "analytics_v2.plays": [{"account_id": 1, "duration_s": 1.5}]})
    >>> dry_run(r, "SELECT account_id AS user_id, duration_s * 1000 AS ms_played "
    ...            "FROM analytics_v2.plays").passed
    True
    >>> wrong = "SELECT account_id AS user_id, duration_s AS ms_played FROM analytics_v2.plays"
    >>> print(dry_run(r, wrong).feedback)
    rows differ on the sample: 1 expected, 1 returned; first expected row not returned: (1, 1500)
    """

    samples: SampleData = field(default_factory=dict)
    name: str = "dry_run"

    def __call__(self, request: RewriteRequest, new_text: str) -> CheckResult:
        if consumer_kind(request) != "sql":
            return self._skip("not SQL")
        missing = [d for d in (request.source, request.target) if d not in self.samples]
        if missing:
            return self._skip(f"no sample rows for {', '.join(missing)}")
        untyped = [d for d in self.samples if d not in request.schemas]
        if untyped:
            return self._skip("sample datasets missing from the request's schemas: "
                              + ", ".join(untyped))
        original, why = _runnable_query(request, request.text)
        if original is None:
            return self._skip(f"the original cannot be run: {why}")
        proposed, why = _runnable_query(request, new_text)
        if proposed is None:
            return self._fail(f"the new text cannot be run: {why}")
        if request.source in _datasets(proposed, request.default_schema):
            return self._fail(f"the new query still reads {request.source}")
        try:
            databases = [self._database(request, without=without)
                         for without in (request.target, request.source)]
        except Exception as exc:  # noqa: BLE001 - e.g. a type DuckDB does not know
            return self._skip(f"cannot load the sample: {_first_line(exc)}")
        source_db, target_db = databases
        with source_db, target_db:
            try:
                expected = _run(source_db, original.sql(dialect="duckdb"))
            except Exception as exc:  # noqa: BLE001 - duckdb.Error and friends: cannot judge
                return self._skip(f"the original fails on the sample: {_first_line(exc)}")
            try:
                actual = _run(target_db, proposed.sql(dialect="duckdb"))
            except Exception as exc:  # noqa: BLE001
                return self._fail(f"the new query fails on {request.target}: {_first_line(exc)}")
        return CheckResult(name=self.name, passed=(problem := _compare(expected, actual)) is None,
                           feedback=problem or "")

    def _fail(self, why: str) -> CheckResult:
        return CheckResult(name=self.name, passed=False, feedback=why)

    def _skip(self, why: str) -> CheckResult:
        return CheckResult(name=self.name, passed=True, skipped=True, feedback=why)

    def _database(self, request: RewriteRequest, without: str):
        """An in-memory DuckDB holding every sample but ``without``; no file access."""
        import duckdb

        con = duckdb.connect(":memory:", config={"enable_external_access": False})
        try:
            schemas = {request.default_schema} | {d.split(".")[0] for d in self.samples if "." in d}
            for schema in sorted(schemas):
                con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            for dataset, rows in self.samples.items():
                if dataset == without:
                    continue
                columns = request.schemas[dataset]
                qualified = dataset if "." in dataset else f"{request.default_schema}.{dataset}"
                name = ".".join(f'"{part}"' for part in qualified.split("."))
                definition = ", ".join(f'"{c}" {t}' for c, t in columns.items())
                con.execute(f"CREATE TABLE {name} ({definition})")
                if rows:
                    marks = ", ".join("?" for _ in columns)
                    con.executemany(f"INSERT INTO {name} VALUES ({marks})",
                                    [[row.get(c) for c in columns] for row in rows])
            con.execute(f'USE "{request.default_schema}"')
            con.execute("SET lock_configuration = true")
        except Exception:
            con.close()
            raise
        return con


def _run(con, sql: str) -> Output:
    cursor = con.execute(sql)
    return [d[0].lower() for d in cursor.description], cursor.fetchall()


def _runnable_query(request: RewriteRequest, text: str) -> tuple[exp.Query | None, str]:
    """The text's result query (its last statement's), or None and why not."""
    text = _substitute_dbt(text, request.dbt_relations)
    if "{{" in text or "{%" in text:
        return None, "Jinja other than ref()/source() is not executed by the dry run"
    try:
        statements = [s for s in sqlglot.parse(text, read=request.dialect) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        return None, f"does not parse as {request.dialect}: {_first_line(exc)}"
    if not statements:
        return None, "no SQL statement"
    last = statements[-1]
    query = last if isinstance(last, exp.Query) else (
        last.expression if isinstance(last, (exp.Create, exp.Insert)) else None)
    if not isinstance(query, exp.Query):
        return None, f"the last statement is a {last.key.upper()}, not a query"
    return query, ""


def _datasets(query: exp.Query, default_schema: str) -> set[str]:
    ctes = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    return {dataset_name(t) if t.db else f"{default_schema}.{t.name.lower()}"
            for t in query.find_all(exp.Table)
            if t.name and not isinstance(t.this, exp.Func) and not (not t.db and t.name.lower() in ctes)}


_DBT_CALL = re.compile(r"\{\{\s*((?:ref|source)\s*\([^)]*\))\s*\}\}")


def _substitute_dbt(text: str, relations: Mapping[str, str]) -> str:
    """Replace ``{{ ref(..) }}``/``{{ source(..) }}`` that ``relations`` knows.

    >>> _substitute_dbt("from {{ source(\\"a\\", \\"b\\") }}", {"source('a','b')": "a.b"})
    'from a.b'
    """
    known = {_call_key(k): v for k, v in relations.items()}
    return _DBT_CALL.sub(lambda m: known.get(_call_key(m.group(1)), m.group(0)), text)


def _call_key(call: str) -> str:
    return re.sub(r"\s+", "", call).replace('"', "'")


def _compare(expected: Output, actual: Output) -> str | None:
    (want_cols, want_rows), (got_cols, got_rows) = expected, actual
    if want_cols != got_cols:
        return f"output columns differ: expected {want_cols}, got {got_cols} (keep names and order)"
    want = {_comparable_row(r): r for r in want_rows}
    got = {_comparable_row(r): r for r in got_rows}
    if sorted(map(_comparable_row, want_rows), key=repr) == \
            sorted(map(_comparable_row, got_rows), key=repr):
        return None
    missing = next((raw for key, raw in want.items() if key not in got), None)
    extra = next((raw for key, raw in got.items() if key not in want), None)
    detail = (f"first expected row not returned: {missing}" if missing is not None
              else f"first unexpected row: {extra}" if extra is not None
              else "the same rows, returned a different number of times")
    return f"rows differ on the sample: {len(want_rows)} expected, {len(got_rows)} returned; {detail}"


def _comparable_row(row: tuple) -> tuple:
    return tuple(map(_comparable, row))


def _comparable(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, Decimal)):
        number = float(value)
        return number if math.isnan(number) or number == 0 else float(f"{number:.9g}")
    return value


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
