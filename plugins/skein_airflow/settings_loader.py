"""Load an Astronomer-format ``airflow_settings.yaml`` into Airflow's metadata DB.

The astro CLI is not available everywhere Skein runs, so ``make run`` loads the
file with this module instead::

    python -m skein_airflow.settings_loader airflow_settings.yaml   # plugins/ on sys.path
    python plugins/skein_airflow/settings_loader.py airflow_settings.yaml
    ... --check    # validate only: no Airflow import, no database

Format (the astro CLI's)::

    airflow:
      connections: [{conn_id, conn_type, conn_host, conn_schema, conn_login,
                     conn_password, conn_port, conn_extra (mapping or JSON), conn_uri}]
      pools:       [{pool_name, pool_slot, pool_description}]
      variables:   [{variable_name, variable_value}]

Connections, pools and variables are upserted by name; nothing is deleted, so
loading a file twice is a no-op. The whole file is validated before anything is
written, and everything is written in one transaction: a bad entry applies nothing.
Errors name the file, line and entry. Stricter than the astro CLI, which skips bad
entries: unknown keys (``pool_slots``) and missing required fields are errors. An
entry with every value empty (the ``astro dev init`` template) is skipped.

This module does not import Airflow until it writes, so ``--check`` and the
parsing half are usable (and testable) without an Airflow configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skein.errors import YamlSyntaxError
from skein.yamlspan import load_yaml_with_lines

SECTIONS = {
    "connections": ("conn_id", {"conn_id", "conn_type", "conn_host", "conn_schema", "conn_login",
                                "conn_password", "conn_port", "conn_extra", "conn_uri"}),
    "pools": ("pool_name", {"pool_name", "pool_slot", "pool_description"}),
    "variables": ("variable_name", {"variable_name", "variable_value"}),
}


# Airflow's own rule (models/connection.py: sanitize_conn_id), checked up front so the
# error names the entry instead of surfacing as a NOT NULL failure at commit.
CONN_ID = re.compile(r"^[\w#!()\-.:/\\]{1,250}$")


class SettingsError(Exception):
    """The settings file is invalid or could not be applied; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Entry:
    """One validated entry: ``where`` is ``file:line: section[i] 'name'`` for messages."""

    section: str
    name: str
    values: dict[str, Any]
    where: str


@dataclass
class Settings:
    path: Path
    connections: list[Entry] = field(default_factory=list)
    pools: list[Entry] = field(default_factory=list)
    variables: list[Entry] = field(default_factory=list)
    skipped: int = 0  # empty template entries

    def summary(self) -> str:
        text = (f"{len(self.connections)} connections, {len(self.pools)} pools, "
                f"{len(self.variables)} variables")
        return text + (f" ({self.skipped} empty template entries skipped)" if self.skipped else "")


def parse_settings(path: str | Path) -> Settings:
    """Read and validate a settings file; raise SettingsError listing every problem."""
    path = Path(path)
    try:
        # YAML's own rules, as the astro CLI reads the file: merge keys merge, the last of
        # repeated keys wins
        doc = load_yaml_with_lines(path.read_text(), str(path), strict=False)
    except OSError as e:
        raise SettingsError([f"{path}: cannot read: {e.strerror}"]) from None
    except YamlSyntaxError as e:
        line = f":{e.line}" if e.line else ""
        raise SettingsError([f"{path}{line}: not valid YAML: {e.problem}"]) from None

    settings = Settings(path=path)
    data = doc.data
    if data is None:
        return settings
    if not isinstance(data, dict) or not isinstance(data.get("airflow", {}), (dict, type(None))):
        raise SettingsError([f"{path}:1: expected a mapping with an 'airflow:' mapping at the top"])
    airflow = data.get("airflow") or {}
    problems = [f"{path}:{doc.line_of(('airflow', k))}: airflow: unknown section '{k}' "
                f"(expected {', '.join(SECTIONS)})" for k in airflow if k not in SECTIONS]

    for section, (name_key, allowed) in SECTIONS.items():
        items = airflow.get(section)
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(f"{path}:{doc.line_of(('airflow', section))}: {section}: "
                            "expected a list of entries")
            continue
        seen: dict[str, str] = {}
        for i, item in enumerate(items):
            line = doc.line_of(("airflow", section, i))
            where = f"{path}:{line}: {section}[{i}]"
            if not isinstance(item, dict):
                problems.append(f"{where}: expected a mapping")
                continue
            if all(v is None for v in item.values()):
                settings.skipped += 1
                continue
            name = item.get(name_key)
            if name is not None:
                where += f" '{name}'"
            entry_problems = _check_entry(section, item, name_key, allowed)
            if not entry_problems and name in seen:
                entry_problems = [f"duplicate {name_key}, first defined at {seen[name]}"]
            problems += [f"{where}: {p}" for p in entry_problems]
            if not entry_problems:
                seen[name] = f"line {line}"
                values = _normalise(section, item)
                getattr(settings, section).append(Entry(section, str(name), values, where))
    if problems:
        raise SettingsError(problems)
    return settings


def _check_entry(section: str, item: dict, name_key: str, allowed: set[str]) -> list[str]:
    """Problems with one entry (empty list when valid)."""
    problems = [f"unknown field '{k}' (expected one of: {', '.join(sorted(allowed))})"
                for k in item if k not in allowed]
    name = item.get(name_key)
    if name is None or str(name).strip() == "":
        problems.append(f"{name_key} is required")
    elif not isinstance(name, str):
        problems.append(f"{name_key} must be a string")
    if section == "connections":
        if isinstance(name, str) and name and not CONN_ID.match(name):
            problems.append("conn_id may only contain letters, digits and #!()-.:/\\_ "
                            "(at most 250)")
        if not item.get("conn_type") and not item.get("conn_uri"):
            problems.append("conn_type (or conn_uri) is required")
        if item.get("conn_uri") and any(item.get(k) is not None for k in
                                        ("conn_type", "conn_host", "conn_schema", "conn_login",
                                         "conn_password", "conn_port", "conn_extra")):
            problems.append("give either conn_uri or the separate conn_* fields, not both")
        port = item.get("conn_port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 0 < port < 65536):
            problems.append(f"conn_port must be an integer from 1 to 65535, got {port!r}")
        extra = item.get("conn_extra")
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except ValueError:
                problems.append("conn_extra must be a mapping or a JSON object string")
                extra = {}
        if extra is not None and not isinstance(extra, dict):
            problems.append("conn_extra must be a mapping or a JSON object string")
    elif section == "pools":
        slots = item.get("pool_slot")
        if slots is None:
            problems.append("pool_slot is required (number of slots, -1 for unlimited)")
        elif isinstance(slots, bool) or not isinstance(slots, int) or slots < -1:
            problems.append(f"pool_slot must be an integer >= -1, got {slots!r}")
    elif section == "variables":
        if "variable_value" not in item or item["variable_value"] is None:
            problems.append("variable_value is required (use '' for an empty value)")
    return problems


def _normalise(section: str, item: dict) -> dict[str, Any]:
    """The values to write, in Airflow's terms."""
    if section == "connections":
        extra = item.get("conn_extra")
        if isinstance(extra, dict):
            extra = json.dumps(extra, sort_keys=True)
        return {"conn_type": item.get("conn_type"), "host": item.get("conn_host"),
                "schema": item.get("conn_schema"), "login": item.get("conn_login"),
                "password": item.get("conn_password"), "port": item.get("conn_port"),
                "extra": extra, "uri": item.get("conn_uri")}
    if section == "pools":
        return {"slots": item["pool_slot"], "description": item.get("pool_description") or ""}
    value = item["variable_value"]
    if isinstance(value, (dict, list, bool)):  # stored as JSON: true, {"a": 1}
        value = json.dumps(value, sort_keys=True)
    return {"value": str(value)}


def apply_settings(settings: Settings, session: Any) -> None:
    """Upsert every entry through Airflow's models in ``session`` (caller commits)."""
    from airflow.models import Connection, Pool, Variable

    for entry in settings.connections:
        with _naming(entry, session):
            v = entry.values
            new = (Connection(conn_id=entry.name, uri=v["uri"]) if v["uri"] else
                   Connection(conn_id=entry.name, conn_type=v["conn_type"], host=v["host"],
                              schema=v["schema"], login=v["login"], password=v["password"],
                              port=v["port"], extra=v["extra"]))
            conn = session.query(Connection).filter(Connection.conn_id == entry.name).one_or_none()
            if conn is None:
                session.add(new)
            else:
                for attr in ("conn_type", "host", "schema", "login", "password", "port", "extra"):
                    setattr(conn, attr, getattr(new, attr))
    for entry in settings.pools:
        with _naming(entry, session):
            Pool.create_or_update_pool(entry.name, slots=entry.values["slots"],
                                       description=entry.values["description"],
                                       include_deferred=False, session=session)
    for entry in settings.variables:
        with _naming(entry, session):
            Variable.set(entry.name, entry.values["value"], session=session)


@contextlib.contextmanager
def _naming(entry: Entry, session: Any) -> Iterator[None]:
    """Re-raise any failure while writing ``entry`` as a SettingsError naming it."""
    try:
        yield
        session.flush()  # so a database error is reported against this entry
    except SettingsError:
        raise
    except Exception as e:
        raise SettingsError([f"{entry.where}: {type(e).__name__}: {e}"]) from e


def load_settings(path: str | Path) -> Settings:
    """Validate ``path`` and upsert it into the configured metadata DB in one transaction."""
    settings = parse_settings(path)
    from airflow.utils.session import create_session

    with create_session() as session:  # commits at the end, rolls back on any error
        apply_settings(settings, session)
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skein_airflow.settings_loader",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", default="airflow_settings.yaml")
    parser.add_argument("--check", action="store_true", help="validate only; do not touch the DB")
    args = parser.parse_args(argv)
    try:
        settings = parse_settings(args.file) if args.check else load_settings(args.file)
    except SettingsError as e:
        print(f"error: {args.file} was not loaded (nothing was changed):", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    verb = "is valid" if args.check else "loaded"
    print(f"{args.file} {verb}: {settings.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
