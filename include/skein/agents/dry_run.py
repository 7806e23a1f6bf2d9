"""The gate's dry run: the original and the proposal run on sample data, outputs compared.

The simulation's own parts, on one consumer: the original runs in a sandbox world holding
the samples without the target, the proposal in one holding the samples without the
source (so a leftover source reference fails), each through ``Sandbox.run`` (one query, its
dialect transpiled to DuckDB, no file or network access). dbt files are rendered through
their project first, as the simulation renders them. Output column names (in order, case-
insensitively) and types must match; then the rows, with ``compare_tables`` and the
campaign's float tolerance. The feedback names what differs, for the LLM's next attempt.

>>> import pyarrow as pa
>>> from skein.rewrite.request import RewriteRequest
>>> r = RewriteRequest(consumer_id="r/q.sql", text="SELECT user_id, ms_played FROM analytics.plays",
...                    dialect="duckdb", source="analytics.plays", target="analytics_v2.plays",
...                    columns={"user_id": "account_id", "ms_played": "CAST(duration_s * 1000 AS BIGINT)"},
...                    schemas={})
>>> dry_run = DryRun({"analytics.plays": pa.Table.from_pylist([{"user_id": 1, "ms_played": 1500}]),
...                   "analytics_v2.plays": pa.Table.from_pylist([{"account_id": 1, "duration_s": 1.5}])})
>>> dry_run(r, "SELECT account_id AS user_id, CAST(duration_s * 1000 AS BIGINT) AS ms_played "
...            "FROM analytics_v2.plays").passed
True
>>> print(dry_run(r, "SELECT account_id AS user_id, duration_s AS ms_played FROM analytics_v2.plays").feedback)
output types differ: ms_played: BIGINT -> DOUBLE (keep each output column's type, e.g. with a CAST)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from skein.agents.checks import CheckResult, consumer_kind
from skein.errors import first_line
from skein.lineage import mentioned_datasets
from skein.rewrite.request import RewriteRequest
from skein.simulation.parity import ParityResult, compare_tables, describe
from skein.simulation.sandbox import Sandbox, SandboxError
from skein.simulation.values import json_value
from skein.simulation.worlds import WarehouseSamples
from skein.spec import SimulationSettings

if TYPE_CHECKING:
    import pyarrow

Samples = Mapping[str, "pyarrow.Table"]  # dataset (schema.table) -> its sample rows
SHOWN_ROWS = 3  # differing rows quoted per side in the feedback
ORIGINAL, PROPOSED, EXPECTED = "__skein_original", "__skein_proposed", "__skein_expected"


@dataclass(frozen=True)
class DryRun:
    """Executable parity on samples (e.g. ``WarehouseSamples``, or small Arrow tables).

    ``samples`` holds the source, the target (the same data, migrated) and any other
    dataset the consumer reads. ``settings`` (float tolerance, sandbox limits): the
    campaign's ``simulation``; default: those of the samples' campaign, else the spec's
    defaults. Skipped (passed) when it cannot judge: not SQL, no samples for the source or
    the target, the original does not run on them.
    """

    samples: Samples = field(default_factory=dict)
    settings: SimulationSettings | None = None
    name: str = "dry_run"

    @property
    def simulation(self) -> SimulationSettings:
        """The settings in force.

        >>> DryRun().simulation.rel_tol
        1e-09
        """
        if self.settings is not None:
            return self.settings
        if isinstance(self.samples, WarehouseSamples):
            return self.samples.campaign.simulation
        return SimulationSettings()

    def __call__(self, request: RewriteRequest, new_text: str) -> CheckResult:
        if consumer_kind(request) != "sql":
            return self._skip("not SQL")
        try:
            missing = [d for d in (request.source, request.target) if d not in self.samples]
        except Exception as exc:  # noqa: BLE001 - e.g. the warehouse cannot be opened
            return self._skip(f"cannot read the samples: {first_line(exc)}")
        if missing:
            return self._skip(f"no samples for {', '.join(missing)}")
        original, why = rendered_sql(request, request.text)
        if original is None:
            return self._skip(f"the original does not render: {why}")
        proposed, why = rendered_sql(request, new_text)
        if proposed is None:
            return self._fail(f"the new text does not render: {why}")
        limits = {"timeout_s": self.simulation.timeout_s, "memory_limit": self.simulation.memory_limit}
        with Sandbox(**limits) as old_world, Sandbox(**limits) as new_world:
            try:
                self._fill(old_world, original, keep=request.source, without=request.target)
                self._fill(new_world, proposed, keep=request.target, without=request.source)
            except Exception as exc:  # noqa: BLE001 - duckdb.Error, a warehouse error: cannot judge
                return self._skip(f"cannot load the samples: {first_line(exc)}")
            try:
                old_world.run(original, ORIGINAL, dialect=request.dialect)
            except SandboxError as exc:
                return self._skip(f"the original fails on the sample: {exc}")
            try:
                new_world.run(proposed, PROPOSED, dialect=request.dialect)
            except SandboxError as exc:
                return self._fail(f"the new text fails on the sample: {exc}"
                                  + _leftover_hint(request, proposed))
            problem = self._compare(old_world, new_world)
        return CheckResult(name=self.name, passed=problem is None, feedback=problem or "")

    def _fill(self, world: Sandbox, sql: str, keep: str, without: str) -> None:
        """Load ``keep`` and every other sampled dataset ``sql`` names, but ``without``."""
        wanted = {keep} | {d for d in mentioned_datasets(sql) if d in self.samples}
        for name in sorted(wanted - {without}):
            world.load(name, self.samples[name])
        world.lock()

    def _compare(self, old_world: Sandbox, new_world: Sandbox) -> str | None:
        """Column names, then types, then rows (the simulation's order); None if equal."""
        old_types, new_types = describe(old_world.connection, ORIGINAL), describe(new_world.connection, PROPOSED)
        old_names, new_names = [c for c, _ in old_types], [c for c, _ in new_types]
        if [c.lower() for c in old_names] != [c.lower() for c in new_names]:
            return columns_feedback(old_names, new_names)
        changed = [f"{c}: {a} -> {b}" for (c, a), (_, b) in zip(old_types, new_types) if a != b]
        if changed:
            return ("output types differ: " + "; ".join(changed)
                    + " (keep each output column's type, e.g. with a CAST)")
        # The original's rows cross over as Arrow, which widens some types (HUGEINT ->
        # DECIMAL): cast them back, under the new names (equal up to case), as simulate does.
        new_world.load_result(EXPECTED, old_world.table(ORIGINAL))
        new_world.cast_columns(EXPECTED, new_types)
        parity = compare_tables(new_world.connection, EXPECTED, PROPOSED, rel_tol=self.simulation.rel_tol,
                                samples=SHOWN_ROWS)
        return None if parity.status == "pass" else rows_feedback(parity)

    def _fail(self, why: str) -> CheckResult:
        return CheckResult(name=self.name, passed=False, feedback=why)

    def _skip(self, why: str) -> CheckResult:
        return CheckResult(name=self.name, passed=True, skipped=True, feedback=why)


def rendered_sql(request: RewriteRequest, text: str) -> tuple[str | None, str]:
    """The SQL a consumer's text runs as: dbt files rendered through their project (as the
    simulation renders them), other text as it is; or None and why not.

    >>> from skein.rewrite.request import RewriteRequest
    >>> r = RewriteRequest(consumer_id="q.sql", text="", dialect="duckdb", source="a.b", target="c.d",
    ...                    columns={}, schemas={})
    >>> rendered_sql(r, "SELECT 1")
    ('SELECT 1', '')
    """
    if not (request.dbt_project_root and request.consumer_path):
        return text, ""
    from skein.dbt import DbtRenderError
    from skein.rewrite.dbt_mask import dbt_project

    try:
        return dbt_project(request.dbt_project_root).render(Path(request.consumer_path), text).sql, ""
    except DbtRenderError as exc:
        return None, str(exc)


def columns_feedback(expected: list[str], got: list[str]) -> str:
    """Which output columns differ, and how to fix it.

    >>> print(columns_feedback(["user_id", "n"], ["account_id", "n"]))
    output columns differ: expected ['user_id', 'n'], got ['account_id', 'n'] (keep names and order; missing: user_id; unexpected: account_id)
    """
    lowered = {c.lower() for c in got}, {c.lower() for c in expected}
    missing = [c for c in expected if c.lower() not in lowered[0]]
    unexpected = [c for c in got if c.lower() not in lowered[1]]
    details = [f"missing: {', '.join(missing)}"] if missing else []
    details += [f"unexpected: {', '.join(unexpected)}"] if unexpected else []
    if not details:
        details = ["same columns in another order"]
    return (f"output columns differ: expected {expected}, got {got} "
            f"(keep names and order; {'; '.join(details)})")


def rows_feedback(parity: ParityResult) -> str:
    """What ``compare_tables`` found, with the first differing rows of each side.

    >>> print(rows_feedback(ParityResult("fail", "1 row(s) only in old, 1 only in new", 2, 2, 1, 1,
    ...                                  [], [{"side": "old", "n": 3}, {"side": "new", "n": 4}])))
    rows differ on the sample (2 expected, 2 returned): 1 row(s) only in old, 1 only in new
      the original returns, the new text does not: {'n': 3}
      the new text returns, the original does not: {'n': 4}
    """
    lines = [f"rows differ on the sample ({parity.old_rows} expected, {parity.new_rows} returned): "
             f"{parity.reason}"]
    if parity.differing_columns:
        lines.append(f"  differing columns: {', '.join(parity.differing_columns)}")
    by_side = {"old": "the original returns, the new text does not",
               "new": "the new text returns, the original does not"}
    for side, label in by_side.items():
        rows = [_plain_row(r) for r in parity.samples if r.get("side") == side][:SHOWN_ROWS]
        if rows:
            lines.append(f"  {label}: {'; '.join(map(str, rows))}")
    pairs = [r for r in parity.samples if "side" not in r][:SHOWN_ROWS]  # key joins: old/new side by side
    if pairs:
        lines.append("  first differing rows: " + "; ".join(str(_plain_row(r)) for r in pairs))
    return "\n".join(lines)


def _plain_row(row: dict) -> dict:
    return {k: json_value(v) for k, v in row.items() if k != "side"}


def _leftover_hint(request: RewriteRequest, sql: str) -> str:
    if request.source.lower() not in mentioned_datasets(sql):
        return ""
    return (f" (it still reads {request.source}, which does not exist after the migration: "
            f"read {request.target})")
