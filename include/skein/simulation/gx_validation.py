"""Run expectations with GX Core: one ephemeral context per process, one unsaved suite and
one validation run per table, results mapped back to the checks that asked for them.

Checks are plain data, ``(index, GX class name, arguments)``; each answer is
``(success, observed)``, where observed is the result's observed value, or its unexpected
count, percent and first values, or why the expectation could not run (an unknown type,
bad arguments, an exception in GX). Nothing here raises for a bad check.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

import pyarrow as pa

from skein.simulation.values import json_value

# While it is imported GX logs ~150 lines at INFO (functions its docs decorator skips,
# metrics declared twice): noise in every task log that imports it after Airflow configured
# logging. Its warnings and errors still come through.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

Check = tuple[int, str, dict]  # (index, GX expectation class name, its arguments)

_GX: dict[str, Any] = {}  # per process: the module, an ephemeral context, a batch definition
_GX_LOCK = threading.Lock()

# Enough for the evidence (observed value, unexpected count and percent, a few unexpected
# values) and half the work of GX's default SUMMARY, which also counts the partial values
# and indexes them.
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 5}


def _gx():
    """Import GX (seconds: ``skein.warm``) and build its ephemeral context once per process."""
    if not _GX:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("skein").add_dataframe_asset("output")
        _GX.update(gx=gx, context=context, batch=asset.add_batch_definition_whole_dataframe("whole"))
    return _GX["gx"], _GX["context"], _GX["batch"]


def validate_with_gx(checks: list[Check], table: pa.Table) -> dict[int, tuple[bool, Any]]:
    """``index -> (success, observed)`` for every check, validating ``table`` directly
    against an unsaved suite: registering a suite and a ValidationDefinition per consumer,
    storing the run and deleting both cost GX more than the expectations themselves."""
    gx, _, batch_definition = _gx()
    out: dict[int, tuple[bool, Any]] = {}
    expectations = []
    waiting: dict[tuple, list[int]] = {}  # identity of an expectation -> its checks' indexes
    for index, expectation, kwargs in checks:
        built = _build(gx, expectation, kwargs)
        if isinstance(built, str):
            out[index] = (False, built)
        else:
            expectations.append(built)
            waiting.setdefault(_identity(built.configuration), []).append(index)
    if not expectations:
        return out
    frame = _frame(table)
    suite = gx.ExpectationSuite(name=f"skein-{uuid.uuid4().hex}", expectations=expectations)
    with _GX_LOCK:  # the context and its data source are shared by the process
        run = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
            suite, result_format=RESULT_FORMAT)
    # An unsaved suite's expectations have no ids, and GX lists those whose metrics failed
    # first: results find their checks by type and arguments (identical checks, identical
    # results, taken in turn). Ids or a meta marker would work too, at 7-14% more time:
    # GX copies every field of an expectation ~85 times per run.
    for result in run.results:
        indexes = waiting.get(_identity(result.expectation_config))
        if not indexes:
            continue
        index = indexes.pop(0)
        if (result.exception_info or {}).get("raised_exception") or _raised(result.exception_info):
            out[index] = (False, "error: " + _exception_message(result.exception_info))
        else:
            out[index] = (bool(result.success), _observed(result.result or {}))
    for index, _, _ in checks:
        out.setdefault(index, (False, "GX returned no result"))
    return out


def _build(gx, expectation: str, kwargs: dict):
    """The GX expectation for a check, or why it cannot be built."""
    cls = getattr(gx.expectations, expectation, None)
    if not (isinstance(cls, type) and issubclass(cls, gx.expectations.Expectation)):
        return f"unknown expectation type {expectation!r}"
    try:
        return cls(**kwargs)
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
    return configuration.type, json.dumps(json_value(kwargs), sort_keys=True)


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
        return json_value(result["observed_value"])
    keys = ("unexpected_count", "unexpected_percent", "partial_unexpected_list")
    observed = {k: json_value(result[k]) for k in keys if k in result}
    if "partial_unexpected_list" in observed:
        observed["partial_unexpected_list"] = observed["partial_unexpected_list"][:5]
    return observed
