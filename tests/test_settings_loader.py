"""plugins/skein_airflow/settings_loader.py against a real Airflow metadata DB.

Airflow reads its configuration once per process, so everything that touches
Airflow runs in a subprocess with its own AIRFLOW_HOME (SQLite, migrated once
for the module). Parsing needs no Airflow and is tested in-process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
# Subprocesses read the loader and the engine (skein.yamlspan) from this checkout, not from
# wherever the venv's editable install of skein points.
PYTHONPATH = os.pathsep.join([str(PLUGINS), str(ROOT / "include")])

_spec = importlib.util.spec_from_file_location(
    "skein_settings_loader_under_test", PLUGINS / "skein_airflow" / "settings_loader.py")
loader = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = loader  # dataclasses look their module up
_spec.loader.exec_module(loader)  # imports skein.yamlspan, never Airflow


def write(tmp_path: Path, text: str, name: str = "settings.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# ---- parsing: no Airflow, no DB ---------------------------------------------------------

def test_parses_the_project_settings_file():
    settings = loader.parse_settings(ROOT / "airflow_settings.yaml")
    assert {e.name for e in settings.pools} >= {"skein_default", "skein_plays-v2"}
    assert {e.name for e in settings.connections} == {"skein_slack", "skein_smtp"}
    assert {e.name for e in settings.variables} == {"skein_campaigns_dir"}


def test_pool_without_pool_slot_names_file_line_and_entry(tmp_path):
    path = write(tmp_path, """
        airflow:
          pools:
            - pool_name: fine
              pool_slot: 2
            - pool_name: no_slots
              pool_description: forgot the slots
    """)
    with pytest.raises(loader.SettingsError) as err:
        loader.parse_settings(path)
    assert err.value.problems == [
        f"{path}:5: pools[1] 'no_slots': pool_slot is required (number of slots, -1 for unlimited)"]


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, """
        airflow:
          connections:
            - conn_id: no_type
            - conn_id: bad port
              conn_type: http
              conn_port: 99999
          pools:
            - pool_name: typo
              pool_slots: 3
            - pool_name: dup
              pool_slot: 1
            - pool_name: dup
              pool_slot: 2
          variables:
            - variable_name: empty
    """)
    with pytest.raises(loader.SettingsError) as err:
        loader.parse_settings(path)
    text = str(err.value)
    assert f"{path}:3: connections[0] 'no_type': conn_type (or conn_uri) is required" in text
    assert f"{path}:4: connections[1] 'bad port': conn_id may only contain" in text
    assert "conn_port must be an integer from 1 to 65535, got 99999" in text
    assert f"{path}:8: pools[0] 'typo': unknown field 'pool_slots'" in text
    assert f"{path}:12: pools[2] 'dup': duplicate pool_name, first defined at line 10" in text
    assert f"{path}:15: variables[0] 'empty': variable_value is required" in text


@pytest.mark.parametrize("text, expected", [
    ("- 1\n", ":1: expected a mapping with an 'airflow:' mapping"),
    ("airflow:\n  pool:\n    - pool_name: x\n", ":2: airflow: unknown section 'pool'"),
    ("airflow:\n  pools: {pool_name: x}\n", ":2: pools: expected a list of entries"),
    ("airflow:\n  pools:\n    - [x]\n", ":3: pools[0]: expected a mapping"),
    ("airflow:\n  pools: [\n", "not valid YAML"),
    ("airflow:\n  connections:\n    - conn_id: c\n      conn_type: http\n      conn_extra: '[1]'\n",
     "conn_extra must be a mapping or a JSON object string"),
])
def test_malformed_files(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(loader.SettingsError, match=None) as err:
        loader.parse_settings(path)
    assert expected in str(err.value)
    assert str(err.value).startswith(str(path))


def test_yaml_rules_as_the_astro_cli_reads_them(tmp_path):
    """Anchors and merge keys merge; of a repeated key the last wins (as before yamlspan)."""
    path = write(tmp_path, """
        airflow:
          connections:
            - &http {conn_id: a, conn_type: http, conn_host: h}
            - <<: *http
              conn_id: b
          pools:
            - pool_name: p
              pool_slot: 1
              pool_slot: x
        """)
    with pytest.raises(loader.SettingsError) as err:
        loader.parse_settings(path)
    assert err.value.problems == [f"{path}:7: pools[0] 'p': pool_slot must be an integer >= -1, got 'x'"]
    settings = loader.parse_settings(write(tmp_path, path.read_text().replace("pool_slot: x", "pool_slot: 2")))
    assert [(e.name, e.values["host"]) for e in settings.connections] == [("a", "h"), ("b", "h")]
    assert settings.pools[0].values["slots"] == 2


def test_yaml_errors_name_the_line(tmp_path):
    path = write(tmp_path, "airflow:\n  pools: [\n")
    with pytest.raises(loader.SettingsError) as err:
        loader.parse_settings(path)
    [problem] = err.value.problems
    assert problem.startswith(f"{path}:3: not valid YAML: ")
    tagged = write(tmp_path, "airflow:\n  variables:\n    - {variable_name: v, variable_value: !env X}\n")
    with pytest.raises(loader.SettingsError) as err:
        loader.parse_settings(tagged)
    assert err.value.problems == [f"{tagged}:3: not valid YAML: could not determine a constructor "
                                  "for the tag '!env'"]


def test_astro_template_entries_are_skipped_and_values_normalised(tmp_path):
    # `astro dev init` writes entries whose values are all empty.
    path = write(tmp_path, """
        airflow:
          connections:
            - conn_id:
              conn_type:
            - conn_id: api
              conn_type: http
              conn_extra: '{"b": 2, "a": 1}'
          variables:
            - variable_name: flag
              variable_value: true
            - variable_name: nested
              variable_value: {k: [1, 2]}
            - variable_name: number
              variable_value: 5
    """)
    settings = loader.parse_settings(path)
    assert settings.skipped == 1
    assert settings.connections[0].values["extra"] == '{"b": 2, "a": 1}'
    assert [v.values["value"] for v in settings.variables] == ["true", '{"k": [1, 2]}', "5"]


def test_check_mode_touches_no_database(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "nowhere"), "PYTHONPATH": PYTHONPATH}
    proc = subprocess.run([sys.executable, "-m", "skein_airflow.settings_loader", "--check",
                           str(ROOT / "airflow_settings.yaml")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "is valid: 2 connections, 2 pools, 1 variables" in proc.stdout
    assert not (tmp_path / "nowhere").exists()


# ---- loading into a real metadata DB -----------------------------------------------------

@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    env = {**os.environ,
           "AIRFLOW_HOME": str(home),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PYTHONPATH": PYTHONPATH}
    proc = subprocess.run([Path(sys.executable).parent / "airflow", "db", "migrate"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env


def load(env, path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skein_airflow.settings_loader", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)


READ_BACK = textwrap.dedent("""
    import json
    from airflow.models import Connection, Pool, Variable
    from airflow.utils.session import create_session
    with create_session() as s:
        out = {
            "connections": {c.conn_id: {"type": c.conn_type, "host": c.host, "schema": c.schema,
                                        "port": c.port, "password": c.password,
                                        "extra": c.extra_dejson}
                            for c in s.query(Connection)},
            "pools": {p.pool: [p.slots, p.description] for p in s.query(Pool)},
            "variables": {v.key: v.val for v in s.query(Variable)},
        }
    print("READ_BACK " + json.dumps(out))
""")


def read_back(env) -> dict:
    proc = subprocess.run([sys.executable, "-c", READ_BACK], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("READ_BACK "))
    return json.loads(line.removeprefix("READ_BACK "))


@pytest.mark.slow
def test_load_writes_connections_pools_variables_and_is_idempotent(airflow_env):
    settings_file = ROOT / "airflow_settings.yaml"
    first = load(airflow_env, settings_file)
    assert first.returncode == 0, first.stderr
    assert "loaded: 2 connections, 2 pools, 1 variables" in first.stdout
    state = read_back(airflow_env)

    assert state["connections"]["skein_slack"] == {
        "type": "slackwebhook", "host": "localhost:8090", "schema": "http", "port": None,
        "password": "skein/notifications", "extra": {}}
    smtp = state["connections"]["skein_smtp"]
    assert (smtp["type"], smtp["host"], smtp["port"]) == ("smtp", "localhost", 1025)
    assert smtp["extra"]["from_email"] == "skein@localhost"
    assert smtp["extra"]["disable_tls"] is True
    assert state["pools"]["skein_default"][0] == 8
    assert state["pools"]["skein_plays-v2"] == [4, "Demo campaign plays-v2"]
    assert state["pools"]["default_pool"][0] == 128  # untouched
    assert state["variables"]["skein_campaigns_dir"] == ".skein/demo/campaigns"

    second = load(airflow_env, settings_file)
    assert second.returncode == 0, second.stderr
    assert read_back(airflow_env) == state


@pytest.mark.slow
def test_changed_values_are_updated_in_place(airflow_env, tmp_path):
    path = write(tmp_path, """
        airflow:
          connections:
            - conn_id: upd_conn
              conn_uri: postgresql://u:secret@db.example:5432/warehouse
          pools:
            - pool_name: upd_pool
              pool_slot: 2
          variables:
            - variable_name: upd_var
              variable_value: one
    """)
    assert load(airflow_env, path).returncode == 0
    path.write_text(path.read_text().replace("pool_slot: 2", "pool_slot: 5")
                    .replace("value: one", "value: two").replace("secret", "rotated"))
    assert load(airflow_env, path).returncode == 0
    state = read_back(airflow_env)
    assert state["pools"]["upd_pool"][0] == 5
    assert state["variables"]["upd_var"] == "two"
    conn = state["connections"]["upd_conn"]
    assert (conn["type"], conn["host"], conn["port"], conn["password"]) == (
        "postgres", "db.example", 5432, "rotated")


@pytest.mark.slow
def test_invalid_file_applies_nothing(airflow_env, tmp_path):
    path = write(tmp_path, """
        airflow:
          pools:
            - pool_name: never_written
              pool_slot: 1
            - pool_name: broken
          variables:
            - variable_name: never_written_either
              variable_value: x
    """)
    proc = load(airflow_env, path)
    assert proc.returncode == 1
    assert "was not loaded (nothing was changed)" in proc.stderr
    assert f"{path}:5: pools[1] 'broken': pool_slot is required" in proc.stderr
    assert "Traceback" not in proc.stderr
    state = read_back(airflow_env)
    assert "never_written" not in state["pools"]
    assert "never_written_either" not in state["variables"]


@pytest.mark.slow
def test_database_error_rolls_back_the_whole_file(airflow_env, tmp_path):
    # Valid to the parser, refused by the database (SQLite integers are 64-bit):
    # the pool written before it must be rolled back.
    path = write(tmp_path, """
        airflow:
          pools:
            - pool_name: written_then_rolled_back
              pool_slot: 1
            - pool_name: too_big
              pool_slot: 100000000000000000000000
    """)
    proc = load(airflow_env, path)
    assert proc.returncode == 1
    assert f"{path}:5: pools[1] 'too_big': OverflowError" in proc.stderr
    assert "written_then_rolled_back" not in read_back(airflow_env)["pools"]
