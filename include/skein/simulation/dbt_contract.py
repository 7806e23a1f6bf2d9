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

import yaml

Check = tuple[str, dict]  # (GX expectation class name, its arguments)


def contract_checks(project_root: Path | str, model_name: str) -> list[Check]:
    """The checks declared for ``model_name`` in the first schema file (under the project's
    model paths) that describes it; none when the project or the model cannot be read."""
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
                    return model_checks(model, enforced)
    return []


def model_checks(model: dict, enforced: bool) -> list[Check]:
    """The checks one model entry of a schema file declares, each once, in file order."""
    checks: list[Check] = []

    def add(expectation: str, /, **kwargs) -> None:
        if (expectation, kwargs) not in checks:
            checks.append((expectation, kwargs))

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
