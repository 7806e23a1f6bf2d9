"""The deployment files without a Docker engine or a cluster (neither exists here):
``docker-compose.yaml`` and ``deploy/helm/values.yaml`` against the image the Dockerfile
builds, Airflow's own CLI and configuration, and the distributed profile they must equal.

The image's layout is derived from the Dockerfile itself (its ``WORKDIR``, ``COPY . .`` minus
``.dockerignore``, and the folders its ``RUN mkdir -p`` makes); every path either file names
inside the image must be in that layout or under a volume mounted there. Every ``airflow``
command is parsed by Airflow's own CLI parser, every ``skein`` command by Skein's, and every
``config`` option of the values file must be one Airflow (or a provider) defines.

The Helm chart's own ``values.schema.json`` is not vendored (docs/deploy.md says why):
``VALUES_SCHEMA`` below is the structure Skein relies on, checked with jsonschema.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import jsonschema
import pytest
import yaml

from celery_env import ROOT  # noqa: F401 - puts plugins/ on sys.path
from skein_airflow.profiles import (DEFAULT_QUEUE, REGION_QUEUES, VISIBILITY_TIMEOUT_S, WORKERS,
                                    DistributedServers, distributed_env, worker_args)

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
VALUES = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
AIRFLOW_SERVICES = {"airflow-init", "api-server", "scheduler", "dag-processor", "triggerer",
                    *(w.name for w in WORKERS)}
COMPOSE_SERVERS = DistributedServers("postgresql://airflow:airflow@postgres:5432", "redis://redis:6379/0", "skein")


# ---- the image the Dockerfile builds --------------------------------------------------------

def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def workdir() -> PurePosixPath:
    return PurePosixPath(re.findall(r"^WORKDIR\s+(\S+)", dockerfile(), re.M)[-1])


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matches the path or one of its parent folders (``**`` also
    matches no folder at all)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(p, pat) or (pat.startswith("**/") and fnmatch.fnmatchcase(p, pat[3:]))
               for pat in patterns for p in prefixes)


def image_layout() -> set[PurePosixPath]:
    """Every file and folder the image holds under WORKDIR, from the Dockerfile's own steps."""
    text = dockerfile()
    assert re.search(r"^COPY(\s+--chown=\S+)?\s+\.\s+\.\s*$", text, re.M), "the Dockerfile copies the project"
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                             check=True).stdout.decode().split("\0")
    base = workdir()
    out = {base}
    for rel in filter(None, tracked):
        if not ignored(rel, patterns) and (ROOT / rel).exists():
            path = base / rel
            out |= {path, *path.parents}
    for made in re.findall(r"mkdir -p ((?:/\S+\s*)+)", text):
        for folder in made.split():
            path = PurePosixPath(folder)
            out |= {path, *path.parents}
    return out


LAYOUT = image_layout()


def test_the_layout_is_the_project_minus_dockerignore():
    base = workdir()
    assert base / "dags" / "skein_campaigns.py" in LAYOUT
    assert base / "plugins" / "skein_airflow" / "profiles.py" in LAYOUT
    assert base / "include" / "skein" / "cli.py" in LAYOUT
    assert base / "airflow_settings.yaml" not in LAYOUT  # local-only settings stay out
    assert base / "shared" in LAYOUT and base / "logs" in LAYOUT  # the mount points it makes


def executables() -> set[str]:
    """Commands the image has: the base image's shell and Python, Airflow (requirements.lock)
    and Skein's console scripts (pyproject.toml, installed by the Dockerfile's pip install -e .)."""
    import tomllib

    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^apache-airflow==", lock, re.M)
    assert re.search(r"pip install .*-e \.", dockerfile())
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {"bash", "python", "test", "airflow", *scripts}


# ---- Airflow's and Skein's own parsers, in a subprocess (Airflow reads its config once) -----

PARSE = textwrap.dedent("""
    import json, sys
    from airflow.cli.cli_parser import get_parser
    from airflow.configuration import conf
    from skein.cli import build_parser

    request = json.loads(sys.stdin.read())
    out = {"airflow": [], "skein": [], "options": []}
    for argv in request["airflow"]:
        try:
            get_parser().parse_args(argv)
            out["airflow"].append(None)
        except SystemExit as exc:
            out["airflow"].append(f"exit {exc.code}")
    for argv in request["skein"]:
        try:
            build_parser().parse_args(argv)
            out["skein"].append(None)
        except SystemExit as exc:
            out["skein"].append(f"exit {exc.code}")
    described = conf.configuration_description
    for section, key in request["options"]:
        out["options"].append(key in described.get(section, {}).get("options", {}))
    print("PARSED " + json.dumps(out))
""")


def parse(airflow=(), skein=(), options=()) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": os.environ.get("PYTEST_TMP_AIRFLOW_HOME", "/tmp/skein-deploy-test"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")])}
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW__")}
    proc = subprocess.run([sys.executable, "-c", PARSE], input=json.dumps(
        {"airflow": list(airflow), "skein": list(skein), "options": list(options)}),
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("PARSED "))[7:])


@pytest.fixture(autouse=True)
def _airflow_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_TMP_AIRFLOW_HOME", str(tmp_path / "airflow"))


# ---- docker-compose.yaml ---------------------------------------------------------------------

def service(name: str) -> dict:
    return COMPOSE["services"][name]


def mounts(svc: dict) -> list[tuple[str, PurePosixPath]]:
    """(source, target in the container) of every volume of a service."""
    out = []
    for entry in svc.get("volumes", []):
        source, target = entry.split(":")[:2]
        out.append((source, PurePosixPath(target)))
    return out


def on_volume(path: PurePosixPath, svc: dict) -> bool:
    return any(path == t or t in path.parents for _, t in mounts(svc))


def in_image(path: PurePosixPath, svc: dict) -> bool:
    return path in LAYOUT or on_volume(path, svc)


def commands(svc: dict) -> list[list[str]]:
    """The service's command, a `bash -c` script split into its simple commands."""
    argv = svc["command"]
    if argv[:2] != ["bash", "-c"]:
        return [argv]
    script = argv[2].replace("(", " ").replace(")", " ")
    return [shlex.split(part) for part in re.split(r"&&|\|\|", script) if part.strip()]


def test_compose_services_and_image():
    assert set(COMPOSE["services"]) == {"postgres", "redis", *AIRFLOW_SERVICES}
    assert (ROOT / "Dockerfile").is_file()
    for name in AIRFLOW_SERVICES:
        svc = service(name)
        assert svc["build"] == "." and svc["image"] == "skein:latest", name
        for dependency in svc.get("depends_on", {}):
            assert dependency in COMPOSE["services"], (name, dependency)
        for source, _ in mounts(svc):
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)  # a bind mount of the project
            else:
                assert source in COMPOSE["volumes"], (name, source)


def test_compose_is_the_distributed_profile():
    profile = distributed_env(COMPOSE_SERVERS)
    for name in AIRFLOW_SERVICES:
        env = service(name)["environment"]
        assert {k: env[k] for k in profile} == profile, name
    # The workers are the profile's workers, started as the profile starts them.
    for worker in WORKERS:
        assert service(worker.name)["command"] == ["airflow", *worker_args(worker)]
    assert service("api-server")["command"] == ["airflow", "api-server"]
    url = service("api-server")["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert url == "http://api-server:8080/execution/"
    assert any(p.endswith(":8080") for p in service("api-server")["ports"])
    init = service("airflow-init")["environment"]
    assert DistributedServers.from_environment(init) == COMPOSE_SERVERS


def test_every_compose_command_and_path_exists_in_the_image():
    have = executables()
    to_parse = {"airflow": [], "skein": []}
    for name in AIRFLOW_SERVICES:
        svc = service(name)
        env = svc["environment"]
        python_path = [PurePosixPath(p) for p in env["PYTHONPATH"].split(":")]
        assert all(in_image(p, svc) for p in python_path), (name, python_path)
        for argv in commands(svc):
            assert argv[0] in have, (name, argv)
            if argv[0] in to_parse:
                to_parse[argv[0]].append(argv[1:])
            if argv[:2] == ["python", "-m"]:  # a module on the image's PYTHONPATH
                module = argv[2].replace(".", "/")
                assert any(in_image(p / f"{module}.py", svc) or in_image(p / module / "__main__.py", svc)
                           for p in python_path), (name, argv)
            for arg in argv[1:]:
                if arg.startswith("/usr/local/airflow/"):
                    assert in_image(PurePosixPath(arg), svc) or on_volume(PurePosixPath(arg), svc), (name, arg)
        for key, value in env.items():  # a path, or a list of them (PYTHONPATH)
            for path in (PurePosixPath(v) for v in str(value).split(":") if v.startswith("/usr/local/airflow/")):
                # in the image, or on a volume mounted there (a file made at run time)
                assert in_image(path, svc) or on_volume(path, svc), (name, key, path)
    parsed = parse(**to_parse)
    assert parsed["airflow"] == [None] * len(to_parse["airflow"]), list(zip(to_parse["airflow"], parsed["airflow"]))
    assert parsed["skein"] == [None] * len(to_parse["skein"]), list(zip(to_parse["skein"], parsed["skein"]))
    assert {tuple(a[:1]) for a in to_parse["airflow"]} >= {("api-server",), ("scheduler",), ("dag-processor",),
                                                           ("triggerer",), ("celery",), ("db",)}


def test_compose_airflow_settings_are_real_options():
    env = service("scheduler")["environment"]
    options = [tuple(k.lower().split("__")[1:3]) for k in env if k.startswith("AIRFLOW__")]
    # [celery_broker_transport_options] is handed to kombu whole: any key is allowed there.
    checked = [o for o in options if o[0] != "celery_broker_transport_options"]
    assert all(parse(options=checked)["options"]), checked


# ---- deploy/helm/values.yaml -----------------------------------------------------------------

NON_EMPTY = {"type": "string", "minLength": 1}
# The part of the official chart's values that Skein relies on, as its values.schema.json
# types them (objects are open: the chart has many more keys).
VALUES_SCHEMA = {
    "type": "object",
    "required": ["executor", "airflowVersion", "defaultAirflowRepository", "defaultAirflowTag",
                 "airflowHome", "data", "config", "workers", "volumes", "volumeMounts", "env", "secret"],
    "properties": {
        "executor": {"const": "CeleryExecutor"},
        "airflowVersion": {"type": "string", "pattern": r"^3\.\d+\.\d+$"},
        "defaultAirflowRepository": NON_EMPTY, "defaultAirflowTag": NON_EMPTY,
        "airflowHome": NON_EMPTY, "uid": {"type": "integer"}, "gid": {"type": "integer"},
        "postgresql": {"type": "object", "properties": {"enabled": {"const": False}}},
        "redis": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
        "data": {"type": "object", "required": ["metadataSecretName"],
                 "properties": {"metadataSecretName": NON_EMPTY}},
        "config": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": {"type": ["string", "integer", "boolean"]}}},
        "workers": {"type": "object", "required": ["celery"], "properties": {
            "celery": {"type": "object", "required": ["keda"], "properties": {
                "keda": {"type": "object",
                         "required": ["enabled", "minReplicaCount", "maxReplicaCount",
                                      "pollingInterval", "cooldownPeriod"],
                         "properties": {"enabled": {"const": True},
                                        "minReplicaCount": {"const": 0},
                                        "maxReplicaCount": {"type": "integer", "minimum": 1},
                                        "pollingInterval": {"type": "integer", "minimum": 1},
                                        "cooldownPeriod": {"type": "integer", "minimum": 0}}},
                "hpa": {"type": "object", "properties": {"enabled": {"const": False}}},
                "sets": {"type": "array", "items": {
                    "type": "object", "required": ["name", "queue"],
                    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9-]+$"},
                                   "queue": NON_EMPTY}}}}},
            "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0}}},
        "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "volumeMounts": {"type": "array", "items": {"type": "object", "required": ["name", "mountPath"]}},
        "env": {"type": "array", "items": {"type": "object", "required": ["name", "value"],
                                           "properties": {"name": NON_EMPTY, "value": {"type": "string"}}}},
        "secret": {"type": "array", "items": {"type": "object", "required": ["envName", "secretName", "secretKey"],
                                              "properties": {"envName": NON_EMPTY, "secretName": NON_EMPTY,
                                                             "secretKey": NON_EMPTY}}},
    },
}


def test_values_have_the_structure_skein_relies_on():
    jsonschema.validate(VALUES, VALUES_SCHEMA)


def test_the_schema_catches_what_it_should():
    broken = json.loads(json.dumps(VALUES))
    broken["workers"]["celery"]["keda"]["minReplicaCount"] = 1
    with pytest.raises(jsonschema.ValidationError, match="0 was expected"):
        jsonschema.validate(broken, VALUES_SCHEMA)
    del broken["workers"]["celery"]["keda"]
    with pytest.raises(jsonschema.ValidationError, match="'keda' is a required property"):
        jsonschema.validate(broken, VALUES_SCHEMA)


def test_values_are_the_distributed_profile():
    config = VALUES["config"]
    profile = distributed_env(COMPOSE_SERVERS)
    for key, value in profile.items():
        if not key.startswith("AIRFLOW__") or key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__EXECUTOR",
                                                    "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND",
                                                    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"):
            continue  # the chart sets those from data.*, redis.* and executor
        section, option = key.lower().split("__")[1:3]
        assert str(config[section][option]) == value, key
    assert config["celery_broker_transport_options"]["visibility_timeout"] == VISIBILITY_TIMEOUT_S
    assert VALUES["executor"] == profile["AIRFLOW__CORE__EXECUTOR"]
    assert config["operators"]["default_queue"] == DEFAULT_QUEUE
    assert {s["queue"] for s in VALUES["workers"]["celery"]["sets"]} == set(REGION_QUEUES.values())
    assert isinstance(config["celery"]["worker_concurrency"], int)  # KEDA's query reads it
    assert [s["envName"] for s in VALUES["secret"]] == ["SKEIN_STORE_URL"]


def test_values_config_options_exist_in_airflow():
    options = [(section, key) for section, keys in VALUES["config"].items() for key in keys]
    assert all(parse(options=options)["options"]), options


def test_values_paths_exist_in_the_image():
    home = PurePosixPath(VALUES["airflowHome"])
    assert home == workdir()
    mounts_at = {m["name"]: PurePosixPath(m["mountPath"]) for m in VALUES["volumeMounts"]}
    assert set(mounts_at) == {v["name"] for v in VALUES["volumes"]}
    assert all(p in LAYOUT for p in mounts_at.values())  # the Dockerfile makes the mount point
    for option in ("dags_folder", "plugins_folder"):
        assert PurePosixPath(VALUES["config"]["core"][option]) in LAYOUT, option
    env = {e["name"]: PurePosixPath(e["value"]) for e in VALUES["env"]}
    # Run directories and campaigns: on the volume every worker shares.
    for name in ("SKEIN_HOME", "SKEIN_CAMPAIGNS_DIR"):
        assert any(m in env[name].parents for m in mounts_at.values()), name
