"""A dbt model's declared contract, read from its project's schema YAML files, as the
expectations (a GX class name and its arguments) it implies.

Mapped: column tests (``tests``/``data_tests``) ``not_null``, ``unique``,
``accepted_values``; column ``constraints`` ``not_null``, ``unique``, ``primary_key``; the
model test ``dbt_utils.unique_combination_of_columns``; and ``data_type`` when the model's
contract is enforced (checked against the engine's types, not by GX). Skipped, because their
meaning cannot be reproduced on one output table: tests with a ``where`` filter,
``severity: warn`` tests (they do not fail a dbt build), ``relationships`` (needs the other
table), custom and package generic tests, ``check`` and ``foreign_key`` constraints, and
versioned models' ``versions:`` blocks.

>>> model = {"name": "daily", "columns": [{"name": "day", "tests": ["unique"],
...                                        "constraints": [{"type": "primary_key"}]}]}
>>> model_checks(model, enforced=False)
[('ExpectColumnValuesToBeUnique', {'column': 'day'}), ('ExpectColumnValuesToNotBeNull', {'column': 'day'})]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skein.dbt_yaml import load, project_files, read_project_config
from skein.errors import DbtProjectError

Check = tuple[str, dict]  # (GX expectation class name, its arguments)


def contract_checks(project_root: Path | str, model_name: str) -> list[Check]:
    """The checks declared for ``model_name`` in the first schema file (under the project's
    model paths) that describes it; none when the project or the model cannot be read."""
    root = Path(project_root)
    try:
        config = read_project_config(root)  # the consumer limits; wrong types are refused
    except DbtProjectError:
        return []
    for path in project_files(root, config.model_paths, ("*.yml", "*.yaml")):
        try:
            doc = load(path).data
        except DbtProjectError:
            continue  # a broken schema file declares nothing we can read
        for model in _list(doc.get("models")) if isinstance(doc, dict) else []:
            if isinstance(model, dict) and model.get("name") == model_name:
                enforced = _contract_enforced(model, config.raw, path.parent.relative_to(root))
                return model_checks(model, enforced)
    return []


def _list(value: Any) -> list:
    """A schema file's list, or none when the file has something else there.

    >>> _list([1]), _list({"a": 1}), _list(None)
    ([1], [], [])
    """
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def model_checks(model: dict, enforced: bool) -> list[Check]:
    """The checks one model entry of a schema file declares, each once, in file order."""
    checks: list[Check] = []

    def add(expectation: str, /, **kwargs) -> None:
        if (expectation, kwargs) not in checks:
            checks.append((expectation, kwargs))

    for column in _list(model.get("columns")):
        name = column.get("name") if isinstance(column, dict) else None
        if not name:
            continue
        for test in _list(column.get("tests")) + _list(column.get("data_tests")):
            test_name, args = _test(test)
            if test_name == "not_null":
                add("ExpectColumnValuesToNotBeNull", column=name)
            elif test_name == "unique":
                add("ExpectColumnValuesToBeUnique", column=name)
            elif test_name == "accepted_values" and isinstance(args.get("values"), list):
                add("ExpectColumnValuesToBeInSet", column=name, value_set=args["values"])
        for constraint in _list(column.get("constraints")):
            kind = constraint.get("type") if isinstance(constraint, dict) else None
            if kind in ("not_null", "primary_key"):
                add("ExpectColumnValuesToNotBeNull", column=name)
            if kind in ("unique", "primary_key"):
                add("ExpectColumnValuesToBeUnique", column=name)
        if enforced and column.get("data_type"):
            add("ExpectColumnValuesToBeOfType", column=name, type_=str(column["data_type"]))
    for test in _list(model.get("tests")) + _list(model.get("data_tests")):
        test_name, args = _test(test)
        if test_name == "dbt_utils.unique_combination_of_columns" and \
                isinstance(args.get("combination_of_columns"), list):
            add("ExpectCompoundColumnsToBeUnique", column_list=list(args["combination_of_columns"]))
    return checks


def _test(test) -> tuple[str | None, dict]:
    """``(name, arguments)`` of one test entry, or ``(None, {})`` when it must be skipped.

    >>> _test("unique"), _test({"accepted_values": {"values": ["a"], "config": {"severity": "warn"}}})
    (('unique', {}), (None, {}))
    """
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
    config = _dict(body.get("config"))
    if body.get("where") or config.get("where") or \
            str(body.get("severity") or config.get("severity") or "").lower() == "warn":
        return None, {}  # filtered or warn-only: not what a dbt build enforces on every row
    args = dict(_dict(body.get("arguments")))  # dbt >= 1.10 nests arguments
    args.update({k: v for k, v in body.items() if k not in ("arguments", "config", "name", "test_name")})
    return str(name), args


def _contract_enforced(model: dict, project: dict, folder: Path) -> bool:
    """The model's own ``config.contract``, else the nearest folder-level ``+contract``."""
    contract = _dict(model.get("config")).get("contract")
    if isinstance(contract, dict) and "enforced" in contract:
        return bool(contract["enforced"])
    node = _dict(project.get("models")).get(project.get("name")) or {}
    value = node.get("+contract") if isinstance(node, dict) else None
    for part in folder.parts[1:]:  # folders below the model path
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            break
        value = node.get("+contract", value)
    return bool(value.get("enforced")) if isinstance(value, dict) else False
