"""Expectations a patched consumer's new output must meet, validated with GX Core.

Built from what is known about a consumer: the profile of its old output (columns, row
count, nulls, small value sets, numeric ranges), its dbt contract (``schema.yml`` tests,
constraints, contracted ``data_type``) and the campaign's own expectations. Specs are plain
data (a GX class name and its arguments), so plans and evidence never import GX; only
``validate`` does, once per process.

Column *types* are checked against the engine's schema (DuckDB ``DESCRIBE``), not with GX:
on pandas 3, GX type expectations see pandas dtypes (``str``, ``float64`` for an integer
column with nulls), not the warehouse's types.

>>> import pyarrow as pa
>>> [s.type for s in profile_expectations(pa.table({"plan": ["free", "paid", None]}))]
['ExpectTableColumnsToMatchOrderedList', 'ExpectTableRowCountToEqual', 'ExpectColumnValuesToBeInSet']
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict

MAX_VALUE_SET = 20  # distinct values up to which a column's value set is expected
TYPE_CHECKS = ("ExpectColumnValuesToBeOfType", "ExpectColumnValuesToBeInTypeList")
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
    """The model's declared contract, from the schema YAML files under its model paths.

    Mapped: column tests (``tests``/``data_tests``) ``not_null``, ``unique``,
    ``accepted_values``; column ``constraints`` ``not_null``, ``unique``, ``primary_key``;
    the model test ``dbt_utils.unique_combination_of_columns``; and ``data_type`` when the
    model's contract is enforced (checked against the engine's types by ``validate``).
    Skipped, because their meaning cannot be reproduced on one output table: tests with a
    ``where`` filter, ``severity: warn`` tests (they do not fail a dbt build),
    ``relationships`` (needs the other table), custom and package generic tests, ``check``
    and ``foreign_key`` constraints, and versioned models' ``versions:`` blocks.

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
    root = Path(project_root)
    try:
        config = yaml.safe_load((root / "dbt_project.yml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    paths = config.get("model-paths") or config.get("source-paths") or ["models"]
    for folder in paths:
        files = sorted((root / folder).rglob("*.yml")) + sorted((root / folder).rglob("*.yaml"))
        for path in files:
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                continue  # a broken schema file declares nothing we can read
            for model in (doc.get("models") or []) if isinstance(doc, dict) else []:
                if isinstance(model, dict) and model.get("name") == model_name:
                    enforced = _contract_enforced(model, config, path.parent.relative_to(root))
                    return _model_specs(model, enforced)
    return []


def _model_specs(model: dict, enforced: bool) -> list[ExpectationSpec]:
    specs: list[ExpectationSpec] = []

    def add(expectation: str, /, **kwargs) -> None:
        new = ExpectationSpec(type=expectation, kwargs=kwargs, origin="dbt")
        if new not in specs:
            specs.append(new)

    for column in model.get("columns") or []:
        name = column.get("name") if isinstance(column, dict) else None
        if not name:
            continue
        for test in (column.get("tests") or []) + (column.get("data_tests") or []):
            test_name, args = _test(test)
            if test_name == "not_null":
                add("ExpectColumnValuesToNotBeNull", column=name)
            elif test_name == "unique":
                add("ExpectColumnValuesToBeUnique", column=name)
            elif test_name == "accepted_values" and isinstance(args.get("values"), list):
                add("ExpectColumnValuesToBeInSet", column=name, value_set=args["values"])
        for constraint in column.get("constraints") or []:
            kind = constraint.get("type") if isinstance(constraint, dict) else None
            if kind in ("not_null", "primary_key"):
                add("ExpectColumnValuesToNotBeNull", column=name)
            if kind in ("unique", "primary_key"):
                add("ExpectColumnValuesToBeUnique", column=name)
        if enforced and column.get("data_type"):
            add("ExpectColumnValuesToBeOfType", column=name, type_=str(column["data_type"]))
    for test in (model.get("tests") or []) + (model.get("data_tests") or []):
        test_name, args = _test(test)
        if test_name == "dbt_utils.unique_combination_of_columns" and args.get("combination_of_columns"):
            add("ExpectCompoundColumnsToBeUnique", column_list=list(args["combination_of_columns"]))
    return specs


def _test(test) -> tuple[str | None, dict]:
    """``(name, arguments)`` of one test entry, or ``(None, {})`` when it must be skipped."""
    if isinstance(test, str):
        return test, {}
    if not isinstance(test, dict) or not test:
        return None, {}
    if "test_name" in test:  # the long form: `- name: my_check` + `test_name: accepted_values`
        name, body = test["test_name"], test
    elif len(test) == 1:
        name, body = next(iter(test.items()))
    else:
        return None, {}
    body = body if isinstance(body, dict) else {}
    config = body.get("config") or {}
    if body.get("where") or config.get("where") or \
            str(body.get("severity") or config.get("severity") or "").lower() == "warn":
        return None, {}  # filtered or warn-only: not what a dbt build enforces on every row
    args = dict(body.get("arguments") or {})  # dbt >= 1.10 nests arguments
    args.update({k: v for k, v in body.items() if k not in ("arguments", "config", "name", "test_name")})
    return str(name), args


def _contract_enforced(model: dict, project: dict, folder: Path) -> bool:
    """The model's own ``config.contract``, else the nearest folder-level ``+contract``."""
    contract = (model.get("config") or {}).get("contract")
    if isinstance(contract, dict) and "enforced" in contract:
        return bool(contract["enforced"])
    node = (project.get("models") or {}).get(project.get("name")) or {}
    value = node.get("+contract") if isinstance(node, dict) else None
    for part in folder.parts[1:]:  # folders below the model path
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            break
        value = node.get("+contract", value)
    return bool(value.get("enforced")) if isinstance(value, dict) else False


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

_GX: dict[str, Any] = {}  # per process: the module, an ephemeral context, a batch definition
_GX_LOCK = threading.Lock()


def _gx():
    """Import GX (~2 s) and build its ephemeral context once per process."""
    if not _GX:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("skein").add_dataframe_asset("output")
        _GX.update(gx=gx, context=context, batch=asset.add_batch_definition_whole_dataframe("whole"))
    return _GX["gx"], _GX["context"], _GX["batch"]


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
    results: list[dict | None] = [None] * len(specs)
    gx_specs = []
    types = None
    for index, spec in enumerate(specs):
        if spec.type in TYPE_CHECKS:
            types = types if types is not None else dict(engine_types or _engine_types(new))
            results[index] = _type_check(spec, types, dialect)
        else:
            gx_specs.append((index, spec))
    if gx_specs:
        for index, outcome in _run_gx(gx_specs, new).items():
            results[index] = outcome
    done = [r for r in results if r is not None]
    return ExpectationResult(passed=all(r["success"] for r in done), results=done,
                             seconds=round(time.perf_counter() - started, 3))


# Enough for the evidence (observed value, unexpected count and percent, a few unexpected
# values) and half the work of GX's default SUMMARY, which also counts the partial values
# and indexes them.
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 5}


def _run_gx(specs: list[tuple[int, ExpectationSpec]], new: pa.Table) -> dict[int, dict]:
    """Validate the batch directly against an unsaved suite: registering a suite and a
    ValidationDefinition per consumer, storing the run and deleting both cost GX more
    than the expectations themselves."""
    gx, _, batch_definition = _gx()
    out: dict[int, dict] = {}
    expectations = []
    waiting: dict[tuple, list[int]] = {}  # identity of an expectation -> its specs' indexes
    for index, spec in specs:
        built = _build(gx, spec)
        if isinstance(built, str):
            out[index] = _result(spec, False, built)
        else:
            expectations.append(built)
            waiting.setdefault(_identity(built.configuration), []).append(index)
    if not expectations:
        return out
    frame = _frame(new)
    suite = gx.ExpectationSuite(name=f"skein-{uuid.uuid4().hex}", expectations=expectations)
    with _GX_LOCK:  # the context and its data source are shared by the process
        run = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
            suite, result_format=RESULT_FORMAT)
    # An unsaved suite's expectations have no ids, and GX lists those whose metrics failed
    # first: results find their specs by type and arguments (identical specs, identical
    # results, taken in turn). Ids or a meta marker would work too, at 7-14% more time:
    # GX copies every field of an expectation ~85 times per run.
    by_index = dict(specs)
    for result in run.results:
        indexes = waiting.get(_identity(result.expectation_config))
        if not indexes:
            continue
        index = indexes.pop(0)
        spec = by_index[index]
        if (result.exception_info or {}).get("raised_exception") or _raised(result.exception_info):
            out[index] = _result(spec, False, "error: " + _exception_message(result.exception_info))
        else:
            out[index] = _result(spec, bool(result.success), _observed(result.result or {}))
    for index, spec in specs:
        out.setdefault(index, _result(spec, False, "GX returned no result"))
    return out


def _build(gx, spec: ExpectationSpec):
    """The GX expectation for a spec, or why it cannot be built."""
    cls = getattr(gx.expectations, spec.type, None)
    if not (isinstance(cls, type) and issubclass(cls, gx.expectations.Expectation)):
        return f"unknown expectation type {spec.type!r}"
    try:
        return cls(**spec.kwargs)
    except Exception as exc:  # pydantic validation of the arguments
        errors = exc.errors() if hasattr(exc, "errors") else None
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors) \
            if errors else str(exc).splitlines()[0]
        return f"bad arguments: {detail}"


def _identity(configuration) -> tuple[str, str]:
    """An expectation configuration's type and arguments, comparable across GX's copies
    (the validated copy's arguments gain the batch's id).

    >>> from types import SimpleNamespace as C
    >>> _identity(C(type="expect_x", kwargs={"b": [1, 2], "a": "c", "batch_id": "skein-output"}))
    ('expect_x', '{"a": "c", "b": [1, 2]}')
    """
    kwargs = {k: v for k, v in configuration.kwargs.items() if k != "batch_id"}
    return configuration.type, json.dumps(_plain(kwargs), sort_keys=True)


def _frame(table: pa.Table):
    """The pandas frame GX reads; decimals become floats (GX compares numbers, not Decimals)."""
    columns = [c.cast(pa.float64()) if pa.types.is_decimal(c.type) else c for c in table.columns]
    return pa.table(columns, names=table.column_names).to_pandas()


def _raised(info) -> bool:
    """GX keys per-metric errors by metric id: ``{metric: {raised_exception: True, ...}}``."""
    return isinstance(info, dict) and any(isinstance(v, dict) and v.get("raised_exception")
                                          for v in info.values())


def _exception_message(info) -> str:
    if isinstance(info, dict) and info.get("exception_message"):
        return str(info["exception_message"])
    for value in (info or {}).values():
        if isinstance(value, dict) and value.get("exception_message"):
            return str(value["exception_message"])
    return "GX raised an exception"


def _observed(result: dict):
    if "observed_value" in result:
        return _plain(result["observed_value"])
    keys = ("unexpected_count", "unexpected_percent", "partial_unexpected_list")
    observed = {k: _plain(result[k]) for k in keys if k in result}
    if "partial_unexpected_list" in observed:
        observed["partial_unexpected_list"] = observed["partial_unexpected_list"][:5]
    return observed


def _result(spec: ExpectationSpec, success: bool, observed) -> dict:
    return {"type": spec.type, "kwargs": _plain(spec.kwargs), "origin": spec.origin,
            "success": success, "observed": observed}


def _plain(value):
    """JSON-safe: numpy scalars to Python, NaN to None, others to strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()  # numpy scalar
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


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


# --- types, from the engine -------------------------------------------------------------

def _engine_types(table: pa.Table) -> list[tuple[str, str]]:
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.register("_skein_output", table)
        return [(r[0], r[1]) for r in con.sql("DESCRIBE SELECT * FROM _skein_output").fetchall()]
    finally:
        con.close()


def _type_check(spec: ExpectationSpec, types: dict[str, str], dialect: str) -> dict:
    column = spec.kwargs.get("column")
    wanted = [spec.kwargs.get("type_")] if spec.type == TYPE_CHECKS[0] else spec.kwargs.get("type_list")
    if column not in types:
        return _result(spec, False, f"no column {column!r}")
    if not wanted or not all(isinstance(w, str) for w in wanted):
        return _result(spec, False, "bad arguments: type_ / type_list must name types")
    actual = types[column]
    return _result(spec, any(same_type(w, actual, dialect) for w in wanted), actual)


_SAME = {"TEXT": "VARCHAR", "CHAR": "VARCHAR", "NCHAR": "VARCHAR", "NVARCHAR": "VARCHAR",
         "BPCHAR": "VARCHAR", "NAME": "VARCHAR"}


def same_type(declared: str, actual: str, dialect: str = "duckdb") -> bool:
    """Whether a declared type (in ``dialect``) names the engine's type (DuckDB's spelling).
    Without parameters, the declared type matches any width: ``decimal`` ~ ``DECIMAL(12,3)``.

    >>> same_type("int", "INTEGER"), same_type("text", "VARCHAR"), same_type("bigint", "INTEGER")
    (True, True, False)
    >>> same_type("int8", "BIGINT", "postgres"), same_type("numeric(12,3)", "DECIMAL(12,3)")
    (True, True)
    """
    from sqlglot import exp
    from sqlglot.errors import ParseError

    try:
        a = exp.DataType.build(declared, dialect=dialect)
        b = exp.DataType.build(actual, dialect="duckdb")
    except (ParseError, ValueError):
        return declared.strip().upper() == actual.strip().upper()
    name_a, name_b = (_SAME.get(t.this.value, t.this.value) for t in (a, b))
    if name_a != name_b:
        return False
    return not a.expressions or a.sql("duckdb") == b.sql("duckdb")
