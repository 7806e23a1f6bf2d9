"""Expectations a patched consumer's new output must meet, validated with GX Core.

Built from what is known about a consumer: the profile of its old output (columns, row
count, nulls, small value sets, numeric ranges), its dbt contract (``schema.yml`` tests,
constraints, contracted ``data_type``; read by ``skein.simulation.dbt_contract``) and the
campaign's own expectations. Specs are plain data (a GX class name and its arguments), so
plans and evidence never import GX; only ``validate`` does, once per process
(``skein.simulation.gx_validation``).

Column *types* are checked against the engine's schema (DuckDB ``DESCRIBE``), not with GX
(``skein.simulation.column_types`` says why).

>>> import pyarrow as pa
>>> [s.type for s in profile_expectations(pa.table({"plan": ["free", "paid", None]}))]
['ExpectTableColumnsToMatchOrderedList', 'ExpectTableRowCountToEqual', 'ExpectColumnValuesToBeInSet']
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from skein.simulation.column_types import TYPE_CHECKS, output_types, type_check
from skein.simulation.dbt_contract import contract_checks
from skein.simulation.gx_validation import validate_with_gx
from skein.simulation.values import json_value

MAX_VALUE_SET = 20  # distinct values up to which a column's value set is expected
COLUMN_ARGS = ("column", "column_A", "column_B")


class ExpectationSpec(BaseModel):
    """One expectation as data: a GX expectation class name and its arguments.

    >>> ExpectationSpec(type="ExpectColumnValuesToNotBeNull", kwargs={"column": "user_id"}).origin
    'campaign'
    """

    model_config = ConfigDict(frozen=True)
    type: str
    kwargs: dict[str, Any] = {}
    origin: str = "campaign"  # profile | dbt | campaign


class ExpectationResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    passed: bool
    results: list[dict] = []  # {type, kwargs, origin, success, observed}, in spec order
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if not r["success"]]


# --- building specs -------------------------------------------------------------------

def profile_expectations(old: pa.Table, *, rel_tol: float = 0.0,
                         max_values: int = MAX_VALUE_SET) -> list[ExpectationSpec]:
    """What the old output shows: its ordered columns, its row count, the columns never
    null, the value set of low-cardinality non-float columns, the range of numeric ones
    (float bounds widened by ``rel_tol``, the parity check's tolerance).

    >>> t = pa.table({"user_id": [1, 2, 3], "ms": [1.5, None, 4.0]})
    >>> for s in profile_expectations(t):
    ...     print(s.type, s.kwargs)
    ExpectTableColumnsToMatchOrderedList {'column_list': ['user_id', 'ms']}
    ExpectTableRowCountToEqual {'value': 3}
    ExpectColumnValuesToNotBeNull {'column': 'user_id'}
    ExpectColumnValuesToBeInSet {'column': 'user_id', 'value_set': [1, 2, 3]}
    ExpectColumnValuesToBeBetween {'column': 'user_id', 'min_value': 1, 'max_value': 3}
    ExpectColumnValuesToBeBetween {'column': 'ms', 'min_value': 1.5, 'max_value': 4.0}
    """
    def spec(expectation: str, /, **kwargs) -> ExpectationSpec:
        return ExpectationSpec(type=expectation, kwargs=kwargs, origin="profile")

    specs = [spec("ExpectTableColumnsToMatchOrderedList", column_list=list(old.column_names)),
             spec("ExpectTableRowCountToEqual", value=old.num_rows)]
    for name, column in zip(old.column_names, old.columns):
        kind = column.type
        if pa.types.is_dictionary(kind):
            column, kind = column.cast(kind.value_type), kind.value_type
        if old.num_rows and column.null_count == 0:
            specs.append(spec("ExpectColumnValuesToNotBeNull", column=name))
        if _settable(kind):
            values = pc.unique(column.drop_null())
            if 0 < len(values) <= max_values:
                specs.append(spec("ExpectColumnValuesToBeInSet", column=name,
                                  value_set=sorted(values.to_pylist())))
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            bounds = pc.min_max(column)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is None or high is None:
                continue  # all null
            if pa.types.is_decimal(kind):
                low, high = float(low), float(high)  # ``validate`` compares decimals as floats
            if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
                if math.isnan(low) or math.isnan(high):
                    continue
                low, high = low - abs(low) * rel_tol, high + abs(high) * rel_tol
            specs.append(spec("ExpectColumnValuesToBeBetween", column=name, min_value=low,
                              max_value=high))
    return specs


def _settable(kind: pa.DataType) -> bool:
    """Types whose values compare exactly after the trip to pandas (no floats, no dates)."""
    return pa.types.is_integer(kind) or pa.types.is_string(kind) or \
        pa.types.is_large_string(kind) or pa.types.is_boolean(kind)


def dbt_expectations(project_root: Path | str, model_name: str) -> list[ExpectationSpec]:
    """The model's declared contract, from the schema YAML files under its model paths
    (what maps to an expectation and what is skipped: ``skein.simulation.dbt_contract``).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "dbt_project.yml").write_text("name: music\\n")
    >>> (root / "models").mkdir()
    >>> _ = (root / "models" / "schema.yml").write_text('''
    ... models:
    ...   - name: daily
    ...     columns:
    ...       - name: user_id
    ...         data_tests: [not_null, unique, relationships: {to: ref('users'), field: id}]
    ...       - name: plan
    ...         tests: [{accepted_values: {values: [free, paid]}}]
    ... ''')
    >>> for s in dbt_expectations(root, "daily"):
    ...     print(s.type, s.kwargs)
    ExpectColumnValuesToNotBeNull {'column': 'user_id'}
    ExpectColumnValuesToBeUnique {'column': 'user_id'}
    ExpectColumnValuesToBeInSet {'column': 'plan', 'value_set': ['free', 'paid']}
    """
    return [ExpectationSpec(type=expectation, kwargs=kwargs, origin="dbt")
            for expectation, kwargs in contract_checks(project_root, model_name)]


def campaign_expectations(campaign, consumer_id: str, columns: list[str],
                          dataset: str | None = None) -> list[ExpectationSpec]:
    """The campaign's own expectations that apply to one consumer: those naming it (or the
    dataset it produces) in ``consumer``, and those for every consumer whose output has all
    the columns they name (table-level ones apply everywhere).

    >>> from skein.spec import Campaign
    >>> c = Campaign.model_validate({"campaign": "c", "title": "t", "owners": ["o"],
    ...     "warehouse": "duckdb:///w.duckdb", "source": "a.x", "target": "a.y",
    ...     "simulation": {"expectations": [
    ...         {"type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": "user_id"}},
    ...         {"type": "ExpectTableRowCountToBeBetween", "kwargs": {"min_value": 1}},
    ...         {"type": "ExpectColumnValuesToBeUnique", "kwargs": {"column": "day"},
    ...          "consumer": "marts.daily"}]}})
    >>> [s.type for s in campaign_expectations(c, "growth:q.sql", ["USER_ID", "n"])]
    ['ExpectColumnValuesToNotBeNull', 'ExpectTableRowCountToBeBetween']
    >>> [s.type for s in campaign_expectations(c, "views:marts.daily", ["day"], "marts.daily")]
    ['ExpectTableRowCountToBeBetween', 'ExpectColumnValuesToBeUnique']
    """
    have = {c.lower() for c in columns}
    targets = {consumer_id.lower()} | ({dataset.lower()} if dataset else set())
    specs = []
    for expectation in campaign.simulation.expectations:
        if expectation.consumer is not None:
            applies = expectation.consumer.lower() in targets
        else:
            named = [expectation.kwargs[k] for k in COLUMN_ARGS if isinstance(expectation.kwargs.get(k), str)]
            named += list(expectation.kwargs.get("column_list") or []) \
                if not expectation.type.startswith("ExpectTable") else []
            applies = all(str(n).lower() in have for n in named)
        if applies:
            specs.append(ExpectationSpec(type=expectation.type, kwargs=dict(expectation.kwargs),
                                         origin="campaign"))
    return specs


# --- validating -------------------------------------------------------------------------

def validate(specs: list[ExpectationSpec], new: pa.Table, *,
             engine_types: list[tuple[str, str]] | None = None,
             dialect: str = "duckdb") -> ExpectationResult:
    """Validate ``new`` against every spec: one GX suite, one validation run.

    Type expectations (``ExpectColumnValuesToBeOfType``/``...InTypeList``) compare
    ``type_``/``type_list``, read in ``dialect``, with ``engine_types`` ((column, DuckDB
    type) pairs; default: DuckDB's view of ``new``). An unknown expectation type or bad
    arguments give a failed result saying so, not an exception.
    """
    started = time.perf_counter()
    names = list(new.column_names)
    specs = [_resolve_columns(s, names) for s in specs]
    outcomes: dict[int, tuple[bool, Any]] = {}  # spec index -> (success, observed)
    gx_checks = []
    types = None
    for index, spec in enumerate(specs):
        if spec.type in TYPE_CHECKS:
            types = types if types is not None else dict(engine_types or output_types(new))
            outcomes[index] = type_check(spec.type, spec.kwargs, types, dialect)
        else:
            gx_checks.append((index, spec.type, spec.kwargs))
    if gx_checks:
        outcomes.update(validate_with_gx(gx_checks, new))
    done = [_result(spec, *outcomes[index]) for index, spec in enumerate(specs) if index in outcomes]
    return ExpectationResult(passed=all(r["success"] for r in done), results=done,
                             seconds=round(time.perf_counter() - started, 3))


def _result(spec: ExpectationSpec, success: bool, observed) -> dict:
    return {"type": spec.type, "kwargs": json_value(spec.kwargs), "origin": spec.origin,
            "success": success, "observed": observed}


def _resolve_columns(spec: ExpectationSpec, names: list[str]) -> ExpectationSpec:
    """Column arguments matched to the output's spelling: engines fold unquoted names."""
    lower = {n.lower(): n for n in names}

    def fix(name):
        return name if not isinstance(name, str) or name in names else lower.get(name.lower(), name)

    kwargs = dict(spec.kwargs)
    for key in COLUMN_ARGS:
        if key in kwargs:
            kwargs[key] = fix(kwargs[key])
    if isinstance(kwargs.get("column_list"), list) and not spec.type.startswith("ExpectTable"):
        kwargs["column_list"] = [fix(n) for n in kwargs["column_list"]]
    return spec if kwargs == spec.kwargs else spec.model_copy(update={"kwargs": kwargs})
