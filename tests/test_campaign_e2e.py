"""Campaign DAGs on a real Airflow (api-server, scheduler, dag-processor; LocalExecutor).

Three demo fleets, three campaigns, one Airflow:
1. ``plays-v2``: triggered over the REST API, approved over the HITL endpoint by the assigned
   approver (a user who is not assigned gets 403), the waves apply: git history, views,
   audit, evidence, asset events and notifications (a real SMTP server, an HTTP webhook
   receiver standing in for Slack) are checked.
2. ``plays-v2-rb``: the target data breaks while the second wave waits for its approval: the
   wave fails its monitoring, everything the run applied is rolled back byte for byte, and
   the rollback is notified.
3. ``plays-v2-crash``: the scheduler (and the tasks it runs) is killed in the middle of a
   wave and started again: the run finishes and nothing is applied twice.
4. ``plays-v2-reject``: a run limited by the ``consumers`` param is rejected: it ends cleanly
   with nothing applied.
5. ``plays-v2-llm``: a wrong column mapping makes the dry run refute the rule agent's
   patches; the run sends them back to the LLM agent (pydantic-ai's ``TestModel``, from an
   Airflow ``pydanticai`` connection) with the verdict, as ``skein plan`` does.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from airflow_env import AirflowEnv, ApiError, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SKEIN = ROOT / ".venv" / "bin" / "skein"
USERS = {"admin": "admin", "alice": "user", "bob": "user"}
# Passwords of the test's connections: they must appear in no log, evidence or notification.
SECRETS = ("webhook-token-7f3a9c", "sk-llm-key-51e0b2")


class Webhook(http.server.ThreadingHTTPServer):
    """Records every JSON body POSTed to it (what SlackWebhookNotifier sends)."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [body["text"] for _, body in self.received]


class Mailbox:
    """A real SMTP server (aiosmtpd) keeping every message it accepts."""

    def __init__(self):
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Message

        self.messages = []
        box = self

        class Keep(Message):
            def handle_message(self, message):
                box.messages.append(message)

        self.port = free_port()  # aiosmtpd checks its own port on start: 0 will not do
        self.controller = Controller(Keep(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def stop(self):
        self.controller.stop()


def campaign_file(fleet: Path, campaign_id: str, campaigns: Path, **rollout) -> Path:
    """The demo fleet's campaign, renamed, with absolute paths and test settings."""
    spec = yaml.safe_load((fleet / "campaigns" / "plays-v2.yaml").read_text())
    spec["campaign"] = campaign_id
    spec["warehouse"] = f"duckdb:///{fleet / 'warehouse.duckdb'}"
    spec["consumers"] = [{"repo": str(fleet / "repos" / "*"), "dialect": "duckdb"},
                         {"warehouse_views": True}]
    spec["rollout"].update({"schedule": None, "approvers": ["alice"], **rollout})
    # Batches of 15: several instances per mapped step (the default would apply the small
    # "everyone" wave in one), as a larger campaign has, so a killed scheduler meets a wave
    # half applied.
    spec["fleet"] = {"retries": 2, "retry_delay_s": 1, "batch_size": 15}
    spec["notifications"] = {"slack_conn_id": "skein_slack", "smtp_conn_id": "skein_smtp",
                             "email_to": ["data-platform@example.com"]}
    path = campaigns / f"{campaign_id}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def snapshot(fleet: Path) -> dict[str, bytes]:
    """Every tracked file of every repository, and every view's DDL, as bytes."""
    out = {}
    for repo in sorted((fleet / "repos").iterdir()):
        files = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True,
                               check=True).stdout.split(b"\0")
        for name in filter(None, files):
            out[f"{repo.name}/{name.decode()}"] = (repo / name.decode()).read_bytes()
    with duckdb.connect(str(fleet / "warehouse.duckdb"), read_only=True) as con:
        for schema, view, sql in con.sql("SELECT schema_name, view_name, sql FROM duckdb_views() "
                                         "WHERE NOT internal").fetchall():
            out[f"view:{schema}.{view}"] = sql.encode()
    return out


def audit(env: AirflowEnv, campaign_id: str) -> list[dict]:
    """The campaign's audit log, read from the store the tasks write (SQLite in SKEIN_HOME)."""
    from skein.store import CampaignStore

    store = CampaignStore(f"sqlite:///{env.home / 'skein' / 'store.db'}")
    try:
        return [e.__dict__ for e in store.events(campaign_id)]
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    campaigns = tmp / "campaigns"
    campaigns.mkdir()
    fleets = {}
    for name, rollout in (("plays-v2", {}), ("plays-v2-rb", {"approve_each_wave": True}),
                          ("plays-v2-crash", {}), ("plays-v2-reject", {}), ("plays-v2-llm", {})):
        fleet = tmp / name
        subprocess.run([str(SKEIN), "demo-fleet", "--out", str(fleet), "--consumers", "40"],
                       check=True, capture_output=True)
        path = campaign_file(fleet, name, campaigns, **rollout)
        if name == "plays-v2-llm":  # seconds taken for milliseconds: every ms_played patch is wrong
            spec = yaml.safe_load(path.read_text())
            spec["columns"]["ms_played"] = "CAST(duration_s AS BIGINT)"
            spec["agents"] = {"llm": {"enabled": True, "conn_id": "skein_llm", "attempts": 2}}
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
        fleets[name] = fleet
    webhook, mailbox = Webhook(), Mailbox()
    connections = {
        "AIRFLOW_CONN_SKEIN_SLACK": json.dumps({
            "conn_type": "slackwebhook", "host": f"127.0.0.1:{webhook.server_address[1]}",
            "schema": "http", "password": f"skein/{SECRETS[0]}"}),
        "AIRFLOW_CONN_SKEIN_SMTP": json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": mailbox.port,
            "extra": {"from_email": "skein@localhost", "disable_ssl": True, "disable_tls": True}}),
        # pydantic-ai's offline TestModel: answers by the output schema, never a good patch.
        "AIRFLOW_CONN_SKEIN_LLM": json.dumps({"conn_type": "pydanticai", "password": SECRETS[1],
                                              "extra": {"model": "test"}}),
    }
    env = AirflowEnv(tmp / "airflow", campaigns, USERS, connections).start()
    try:
        yield env, fleets, webhook, mailbox
    finally:
        env.stop()
        mailbox.stop()
        webhook.shutdown()


def audit_patched(env: AirflowEnv, campaign_id: str, consumer: str) -> bool:
    return any(e["action"] == "patched" and e["consumer"] == consumer for e in audit(env, campaign_id))


def run_dir(env: AirflowEnv, campaign_id: str, run_id: str) -> Path:
    from skein.pipeline import run_directory

    return run_directory(campaign_id, run_id, env.home / "skein")


def test_trigger_approve_apply(world):
    env, fleets, webhook, mailbox = world
    fleet, dag = fleets["plays-v2"], "skein__plays-v2"
    before = snapshot(fleet)
    env.wait_for_dag(dag)
    run = env.trigger(dag)
    request = env.wait_for_approval(dag, run, "approval")
    assert [u["id"] for u in request["assigned_users"]] == ["alice"]
    assert "patched" in request["body"] and "| canary |" in request["body"]
    # the evidence is the portal's page (a link that opens in a browser), the file a record
    assert f"Evidence: [{env.base}/skein/campaigns/plays-v2]({env.base}/skein/campaigns/plays-v2)" \
        in request["body"]
    escalated = next(line for line in request["body"].splitlines() if ": escalated: " in line)
    assert escalated.startswith("- [`") and f"]({env.base}/skein/campaigns/plays-v2/consumers/" in escalated
    with pytest.raises(ApiError) as refused:
        env.answer(dag, run, "approval", "Approve all", user="bob")
    assert refused.value.status == 403
    answer = env.decide(dag, run, "approval", "Approve all", user="alice")
    assert answer["responded_by"]["id"] == "alice"
    assert env.wait_for_run(dag, run) == "success", env.task_states(dag, run)

    directory = run_dir(env, "plays-v2", run)
    plan = json.loads((directory / "plan.json").read_text())
    patched = [i["id"] for i in plan["items"] if i["status"] == "patched"]
    assert patched and (directory / "summary.html").is_file()
    events = audit(env, "plays-v2")
    applied = [e for e in events if e["action"] == "applied"]
    assert sorted(e["consumer"] for e in applied) == sorted(patched)
    assert {e["actor"] for e in events if e["action"] == "approved"} == {"user:alice"}
    printed = subprocess.run([str(SKEIN), "audit", "plays-v2"], env=env.env, capture_output=True,
                             text=True, check=True).stdout.splitlines()
    assert len(printed) == len(events)
    assert any(f"{run} user:alice: approved" in line for line in printed)
    after = snapshot(fleet)
    for cid in patched:
        name = cid.replace("/", "__")
        if cid.startswith("warehouse/"):
            view = "view:" + cid.split("/", 1)[1]
            assert "analytics_v2.plays" in after[view].decode() and after[view] != before[view]
        else:
            assert after[cid] == (directory / "patched" / name).read_bytes()
            repo, path = fleet / "repos" / cid.split("/")[0], cid.split("/", 1)[1]
            log = subprocess.run(["git", "-C", str(repo), "log", "--merges", "--first-parent", "--format=%s",
                                  "--", path],
                                 capture_output=True, text=True, check=True).stdout.splitlines()
            assert log == [f"Merge skein/plays-v2: skein(plays-v2): {path} reads analytics_v2.plays "
                           "instead of analytics.plays"]
    untouched = set(before) - {c if not c.startswith("warehouse/") else "view:" + c.split("/", 1)[1]
                               for c in patched}
    assert all(after[k] == before[k] for k in untouched)
    # Notifications: the approval waiting, the escalations, the end; on both channels.
    for texts in (webhook.texts(), mailbox.subjects()):
        joined = "\n".join(texts)
        assert "plays-v2: approve" in joined and "need a human" in joined
        assert "plays-v2: finished" in joined
    # The scheduler preloaded the engine for its LocalExecutor workers (airflow_local_settings.py),
    # so no task imported it (Great Expectations alone takes ~10 s); the other components did not.
    logs = [p for p in (env.home / "logs" / f"dag_id={dag}" / f"run_id={run}").glob("task_id=*/**/*.log")
            if "task_id=approval" not in str(p)]
    assert len(logs) >= 10
    for path in logs:
        assert "engine preloaded by this worker" in path.read_text(), path
    assert "skein: preloaded for the task runners" in (env.home / "scheduler.log").read_text()
    for component in ("api-server", "dag-processor"):
        assert "skein: preloaded" not in (env.home / f"{component}.log").read_text()
    # Asset events: the target dataset was migrated to.
    events = env.get("/api/v2/assets/events?limit=100")["asset_events"]
    assert any(e.get("uri") == "skein://dataset/analytics_v2.plays" or
               e.get("asset", {}).get("uri") == "skein://dataset/analytics_v2.plays" for e in events)


def test_broken_target_rolls_back_everything(world):
    env, fleets, webhook, mailbox = world
    fleet, dag = fleets["plays-v2-rb"], "skein__plays-v2-rb"
    before = snapshot(fleet)
    env.wait_for_dag(dag)
    run = env.trigger(dag)
    env.wait_for_approval(dag, run, "approval")
    env.decide(dag, run, "approval", "Approve all", user="alice")
    env.wait_for_approval(dag, run, "approve_everyone")
    canary = [e for e in audit(env, "plays-v2-rb") if e["action"] == "applied"]
    assert canary and {e["wave"] for e in canary} == {"canary"}
    assert snapshot(fleet) != before
    # The target breaks while the second wave waits: every consumer of it now misses its suite.
    with duckdb.connect(str(fleet / "warehouse.duckdb")) as con:
        con.execute("DELETE FROM analytics_v2.plays")
    env.decide(dag, run, "approve_everyone", "Continue", user="alice")
    assert env.wait_for_run(dag, run) == "failed"
    states = env.task_states(dag, run)
    assert states["rollback"] == ["success"] and states["finalize"] == ["failed"]

    events = audit(env, "plays-v2-rb")
    actions = [e["action"] for e in events]
    failed = next(e for e in events if e["action"] == "wave_failed")
    assert failed["wave"] == "everyone" and failed["detail"]["error_rate"] > failed["detail"]["threshold"]
    assert "campaign_rolled_back" in actions
    applied = {e["consumer"] for e in events if e["action"] == "applied"}
    rolled = {e["consumer"] for e in events if e["action"] == "rolled_back"}
    assert applied and rolled == applied
    assert snapshot(fleet) == before  # every file and view byte-identical to before the run
    assert any("plays-v2-rb: rolled back" in t for t in webhook.texts())
    assert any("plays-v2-rb: rolled back" in s for s in mailbox.subjects())


def test_scheduler_killed_mid_wave_applies_nothing_twice(world):
    env, fleets, _, _ = world
    fleet, dag = fleets["plays-v2-crash"], "skein__plays-v2-crash"
    env.wait_for_dag(dag)
    run = env.trigger(dag)
    env.wait_for_approval(dag, run, "approval")
    env.decide(dag, run, "approval", "Approve all", user="alice")
    deadline = time.time() + 300
    while time.time() < deadline:
        if any(e["action"] == "applied" and e["wave"] == "everyone" for e in audit(env, "plays-v2-crash")):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"wave everyone never started: {env.task_states(dag, run)}")
    env.kill("scheduler")  # and the LocalExecutor workers and task processes under it
    applied_at_kill = sum(e["action"] == "applied" for e in audit(env, "plays-v2-crash"))
    wave = json.loads((run_dir(env, "plays-v2-crash", run) / "waves.json").read_text())["everyone"]
    patched_in_wave = [c for c in wave if audit_patched(env, "plays-v2-crash", c)]
    canary = sum(e["action"] == "applied" and e["wave"] == "canary" for e in audit(env, "plays-v2-crash"))
    assert applied_at_kill - canary < len(patched_in_wave), "the wave ended before the kill"
    env.spawn("scheduler")
    assert env.wait_for_run(dag, run, timeout=900) == "success", env.task_states(dag, run)

    events = audit(env, "plays-v2-crash")
    applied = [e["consumer"] for e in events if e["action"] == "applied"]
    assert len(applied) == len(set(applied)) > applied_at_kill
    plan = json.loads((run_dir(env, "plays-v2-crash", run) / "plan.json").read_text())
    assert sorted(applied) == sorted(i["id"] for i in plan["items"] if i["status"] == "patched")
    for cid in (c for c in applied if not c.startswith("warehouse/")):
        repo, path = fleet / "repos" / cid.split("/")[0], cid.split("/", 1)[1]
        merges = subprocess.run(["git", "-C", str(repo), "log", "--merges", "--first-parent", "--format=%H",
                                 "--", path],
                                capture_output=True, text=True, check=True).stdout.split()
        assert len(merges) == 1, cid


def test_rejected_run_ends_cleanly_with_nothing_applied(world):
    env, fleets, _, _ = world
    fleet, dag = fleets["plays-v2-reject"], "skein__plays-v2-reject"
    before = snapshot(fleet)
    env.wait_for_dag(dag)
    run = env.trigger(dag, {"consumers": "sandbox/*"})
    request = env.wait_for_approval(dag, run, "approval")
    assert "sandbox/" in request["body"]
    env.decide(dag, run, "approval", "Reject", user="alice")
    assert env.wait_for_run(dag, run) == "success", env.task_states(dag, run)
    states = env.task_states(dag, run)
    assert states["apply_canary__default"] == ["skipped"] and states["monitor_canary"] == ["skipped"]
    outcome = env.get(f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/finalize/xcomEntries/return_value")
    assert outcome["value"]["status"] == "rejected" and outcome["value"]["applied"] == 0
    events = audit(env, "plays-v2-reject")
    assert not [e for e in events if e["action"] in ("apply_started", "applied")]
    assert {e["actor"] for e in events if e["action"] == "rejected"} == {"user:alice"}
    report = json.loads((run_dir(env, "plays-v2-reject", run) / "discovery.json").read_text())
    assert report["consumers"] and all(c["id"].startswith("sandbox/") or c["id"] in
                                       {u for c2 in report["consumers"] for u in c2["upstream"]}
                                       for c in report["consumers"])
    assert snapshot(fleet) == before


def test_airflow_run_sends_refuted_patches_back_to_the_llm_agent(world):
    env, fleets, _, _ = world
    dag, campaign = "skein__plays-v2-llm", "plays-v2-llm"
    before = snapshot(fleets[campaign])
    env.wait_for_dag(dag)
    run = env.trigger(dag, {"dry_run": True})
    assert env.wait_for_run(dag, run) == "success", env.task_states(dag, run)
    events = audit(env, campaign)
    retried = {e["consumer"]: e["detail"]["message"] for e in events if e["action"] == "retried"}
    assert retried, "no refuted patch went back to the LLM agent"
    directory = run_dir(env, campaign, run)
    plan = {i["id"]: i for i in json.loads((directory / "plan.json").read_text())["items"]}
    for cid, hint in retried.items():
        name = cid.replace("/", "__")
        assert hint.startswith("a patch failed its dry run on data (fail)"), hint
        assert json.loads((directory / "retry" / f"{name}.json").read_text())["refuted_by"] == hint
        transcript = json.loads((directory / "llm" / f"{name}.retry.json").read_text())
        assert transcript["hint"] == hint and len(transcript["attempts"]) == 2
        assert "failed its dry run on data" in transcript["attempts"][0]["prompt"]
        # TestModel's answers never pass the gate: the consumer goes to a human, with the reason.
        assert plan[cid]["agent"] == "llm" and plan[cid]["status"] == "escalated", plan[cid]
        assert "no answer passed the gate" in plan[cid]["reason"]
    assert {e["consumer"] for e in events if e["action"] == "escalated" and e["detail"]["agent"] == "llm"} \
        >= set(retried)
    assert snapshot(fleets[campaign]) == before  # a dry run applies nothing


def test_connection_secrets_appear_nowhere(world):
    """Task logs, run directories, evidence, the campaign store and the notifications sent
    hold none of the connections' passwords (Airflow masks them in logs; Skein never copies
    a connection into what it writes). Runs last: every other run's output is there."""
    env, _, webhook, mailbox = world
    leaks = []
    for path in env.home.rglob("*"):
        if path.is_file() and not path.name.startswith("airflow.db"):
            data = path.read_bytes()
            leaks += [(str(path), s) for s in SECRETS if s.encode() in data]
    sent = json.dumps([body for _, body in webhook.received]) + "".join(m.as_string() for m in mailbox.messages)
    leaks += [("notification", s) for s in SECRETS if s in sent]
    assert webhook.received and not leaks, leaks
