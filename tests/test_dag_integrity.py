"""dags/ through Airflow's own DagBag, over a campaigns dir with valid and broken files.

A broken campaign file must show as an import error naming the file and line,
and must not stop the valid campaigns' DAGs: in Airflow 3.3 an import error on a
DAG file marks all of that file's DAGs stale in the DB, which is why broken files
are reported by a second DAG file (see plugins/skein_airflow/campaign_dags.py).
The last test checks exactly that against a real metadata DB.

Airflow reads its configuration once per process: each scenario runs in a
subprocess with its own AIRFLOW_HOME and SKEIN_CAMPAIGNS_DIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"

VALID = {
    "alpha.yaml": """
        campaign: alpha
        title: Move plays readers to analytics_v2
        description: |
          Renames **user_id** to account_id.
        owners: [team-a, team-b]
        warehouse: duckdb:///wh.duckdb
        source: analytics.plays
        target: analytics_v2.plays
        rollout:
          schedule: "0 3 * * *"
          approvers: [alice, bob]
          approve_each_wave: true
          waves:
            - {name: canary, share: 0.05, soak_minutes: 30}
            - {name: rest, share: 1.0}
        fleet:
          pool: skein_alpha
          queues: {eu: skein-eu}
          tier_priority: {1: 10}
          retries: 3
          retry_delay_s: 10
          execution_timeout_minutes: 20
    """,
    "beta.yml": """
        campaign: beta
        title: Users v2
        owners: [team-c]
        warehouse: duckdb:///wh.duckdb
        source: analytics.users
        target: analytics_v2.users
        rollout:
          schedule: null
    """,
}
BROKEN = {
    # line 7: not a cron expression
    "broken.yaml": """
        campaign: gamma
        title: Gamma
        owners: [team-c]
        warehouse: duckdb:///wh.duckdb
        source: analytics.users
        target: analytics_v2.users
        rollout: {schedule: every night}
    """,
    # two files of one id: each loads, neither gets the DAG (whichever was read first would
    # be the campaign, approvers included: issue 18)
    "delta.yaml": """
        campaign: delta
        title: Delta
        owners: [team-a]
        warehouse: duckdb:///wh.duckdb
        source: analytics.plays
        target: analytics_v2.plays
    """,
    "copy-of-delta.yaml": """
        campaign: delta
        title: A second delta
        owners: [team-a]
        warehouse: duckdb:///wh.duckdb
        source: analytics.plays
        target: analytics_v2.plays
    """,
}

PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=sys.argv[1])
    dags = {d.dag_id: {"tags": sorted(d.tags), "schedule": d.schedule, "owner": d.owner,
                       "catchup": d.catchup, "max_active_runs": d.max_active_runs,
                       "doc_md": d.doc_md, "description": d.description,
                       "tasks": {t.task_id: t.pool for t in d.tasks},
                       "fleet": {t.task_id: {"queue": t.queue, "priority_weight": t.priority_weight,
                                             "retries": t.retries,
                                             "retry_delay": t.retry_delay.total_seconds(),
                                             "backoff": t.retry_exponential_backoff,
                                             "timeout": t.execution_timeout.total_seconds()
                                                        if t.execution_timeout else None,
                                             "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
                                             "assigned_users": getattr(t, "assigned_users", None),
                                             "options": getattr(t, "options", None),
                                             "upstream": sorted(t.upstream_task_ids)}
                                 for t in d.tasks},
                       "params": {k: d.params.get_param(k).value for k in d.params},
                       "file": Path(d.fileloc).name}
            for d in bag.dags.values()}
    errors = {Path(k).name: v for k, v in bag.import_errors.items()}
    print("DAGBAG " + json.dumps({"dags": dags, "errors": errors}))
""")


def airflow_env(tmp: Path, campaigns: Path) -> dict[str, str]:
    return {**os.environ,
            "AIRFLOW_HOME": str(tmp / "airflow_home"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp}/airflow_home/airflow.db",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "SKEIN_CAMPAIGNS_DIR": str(campaigns)}


def write_campaigns(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text).lstrip())
    return directory


def dagbag(tmp: Path, campaigns: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(DAGS)], capture_output=True,
                          text=True, env=airflow_env(tmp, campaigns), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("DAGBAG "))
    return json.loads(line.removeprefix("DAGBAG "))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Two valid campaigns, one invalid file, two files of one id."""
    tmp = tmp_path_factory.mktemp("mixed")
    campaigns = write_campaigns(tmp / "campaigns", {**VALID, **BROKEN})
    return campaigns, dagbag(tmp, campaigns)


def test_valid_campaigns_load_despite_broken_files(mixed):
    _, bag = mixed
    assert sorted(bag["dags"]) == ["skein__alpha", "skein__beta"]
    assert {d["file"] for d in bag["dags"].values()} == {"skein_campaigns.py"}
    assert "skein_campaigns.py" not in bag["errors"]


def test_dag_attributes_come_from_the_spec(mixed):
    _, bag = mixed
    alpha, beta = bag["dags"]["skein__alpha"], bag["dags"]["skein__beta"]
    assert alpha["schedule"] == "0 3 * * *"
    assert beta["schedule"] is None
    assert alpha["tags"] == ["skein", "source:analytics.plays"]
    assert alpha["owner"] == "team-a,team-b"
    assert alpha["description"] == "Move plays readers to analytics_v2"
    assert alpha["doc_md"].startswith("Renames **user_id** to account_id.")
    assert beta["doc_md"].startswith("Users v2")  # no description: the title
    assert (alpha["catchup"], alpha["max_active_runs"]) == (False, 1)
    assert list(beta["tasks"]) == [
        "discover", "agents", "simulate", "summarize", "approval", "start_canary",
        "apply_canary__default", "monitor_canary", "start_everyone", "apply_everyone__default",
        "monitor_everyone", "rollback", "finalize"]
    # Consumer work in the campaign's pool; discovery in the shared one.
    assert alpha["tasks"]["discover"] == "skein_default"
    assert {alpha["tasks"][t] for t in ("agents", "simulate", "apply_canary__eu__tier1")} == {"skein_alpha"}
    assert beta["params"] == {"dry_run": False, "waves": ["canary", "everyone"],
                              "error_threshold": None, "consumers": None}


def test_fleet_settings_become_task_settings(mixed):
    _, bag = mixed
    fleet = bag["dags"]["skein__alpha"]["fleet"]
    # One mapped apply task per region x tier group: queue and priority are per task.
    applies = {t: f for t, f in fleet.items() if t.startswith("apply_canary__")}
    assert {t: (f["queue"], f["priority_weight"]) for t, f in applies.items()} == {
        "apply_canary__eu__tier1": ("skein-eu", 10), "apply_canary__eu__other": ("skein-eu", 1),
        "apply_canary__default__tier1": ("default", 10), "apply_canary__default__other": ("default", 1)}
    apply = fleet["apply_rest__eu__tier1"]
    assert (apply["retries"], apply["retry_delay"], apply["backoff"], apply["timeout"]) == (3, 10, 2.0, 1200)  # backoff factor 2: the delay doubles
    # Approvals: the spec's approvers, no worker time limit, asked again once if Airflow loses
    # the answer; one per later wave.
    assert fleet["approval"]["assigned_users"] == [{"id": "alice", "name": "alice"},
                                                   {"id": "bob", "name": "bob"}]
    assert fleet["approval"]["options"] == ["Approve all", "Approve canary only", "Reject"]
    assert (fleet["approval"]["timeout"], fleet["approval"]["retries"]) == (None, 1)
    assert fleet["approve_rest"]["options"] == ["Continue", "Stop"]
    assert fleet["start_rest"]["upstream"] == ["approve_rest"]
    assert "approve_canary" not in fleet
    # The canary soaks 30 minutes before it is monitored.
    assert fleet["monitor_canary"]["upstream"] == ["soak_canary"]
    assert fleet["rollback"]["trigger_rule"] == fleet["finalize"]["trigger_rule"] == "all_done"


def test_broken_files_are_one_import_error_naming_file_and_line(mixed):
    campaigns, bag = mixed
    assert list(bag["errors"]) == ["skein_campaign_errors.py"]
    error = bag["errors"]["skein_campaign_errors.py"]
    assert "3 campaign file(s)" in error
    assert f"{campaigns}/broken.yaml:7: rollout.schedule: 'every night' is not a 5-field cron" in error
    assert (f"{campaigns}/copy-of-delta.yaml:1: campaign: id 'delta' is also the id of "
            f"{campaigns}/delta.yaml") in error


def test_no_import_errors_when_every_campaign_is_valid(tmp_path):
    bag = dagbag(tmp_path, write_campaigns(tmp_path / "campaigns", VALID))
    assert bag["errors"] == {}
    assert sorted(bag["dags"]) == ["skein__alpha", "skein__beta"]


def test_missing_campaigns_dir_means_no_dags_and_no_errors(tmp_path):
    bag = dagbag(tmp_path, tmp_path / "does-not-exist")
    assert bag == {"dags": {}, "errors": {}}


SYNC = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from sqlalchemy import select
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.errors import ParseImportError
    from airflow.utils.session import create_session

    with create_session() as s:
        s.add(DagBundleModel(name="dags-folder"))
    bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[1]),
                       bundle_name="dags-folder")
    sync_bag_to_db(bag, "dags-folder", None)  # what the dag-processor does after a parse
    with create_session() as s:
        dags = {d.dag_id: {"has_import_errors": d.has_import_errors, "is_stale": d.is_stale}
                for d in s.scalars(select(DagModel))}
        errors = sorted(e.filename for e in s.scalars(select(ParseImportError)))
    print("SYNC " + json.dumps({"dags": dags, "errors": errors}))
""")


@pytest.mark.slow
def test_valid_campaign_dags_stay_runnable_in_the_metadata_db(tmp_path):
    campaigns = write_campaigns(tmp_path / "campaigns", {**VALID, **BROKEN})
    env = airflow_env(tmp_path, campaigns)
    migrate = subprocess.run([Path(sys.executable).parent / "airflow", "db", "migrate"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-c", SYNC, str(DAGS)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = json.loads(next(x for x in proc.stdout.splitlines()
                            if x.startswith("SYNC ")).removeprefix("SYNC "))

    assert state["errors"] == ["skein_campaign_errors.py"]
    runnable = {"has_import_errors": False, "is_stale": False}
    assert state["dags"] == {"skein__alpha": runnable, "skein__beta": runnable}


def test_a_hundred_campaigns_all_load(tmp_path):
    """The scale bench/parse.py times (goal <= 2 s): every DAG loads, none is lost."""
    base = textwrap.dedent(VALID["alpha.yaml"]).lstrip()
    files = {f"c{n:03d}.yaml": base.replace("campaign: alpha", f"campaign: c{n:03d}") for n in range(100)}
    bag = dagbag(tmp_path, write_campaigns(tmp_path / "campaigns", files))
    assert bag["errors"] == {}
    assert sorted(bag["dags"]) == [f"skein__c{n:03d}" for n in range(100)]
