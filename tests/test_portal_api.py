"""The portal on a real Airflow (api-server, scheduler, dag-processor): every route and action
over HTTP, with the refusals, the audit entries each action writes, and the approval answered
through Airflow's own HITL.

Users (``tests/portal_auth.py`` is SimpleAuthManager, except that mallory may not see the
``skein__plays-v2`` DAG): admin; alice (the campaign's approver) and bob (may edit DAGs, not
an approver); vic (a viewer: reads, never acts); mallory. A second campaign,
``plays-v2-quiet``, has a file and no run: mallory's catalog lists only it.

One run of ``plays-v2`` is triggered; while it waits for its approval the tests read, act and
are refused; the last test answers the approval in the portal and the run applies the rest.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from airflow_env import ROOT, AirflowEnv
from test_campaign_e2e import Webhook, campaign_file

pytestmark = pytest.mark.slow

CAMPAIGN, QUIET, DAG = "plays-v2", "plays-v2-quiet", "skein__plays-v2"
USERS = {"admin": "admin", "alice": "user", "bob": "user", "vic": "viewer", "mallory": "user"}
HOSTILE = "<script>alert(\"x\")</script>'\"><img src=x onerror=alert(1)>"
HOSTILE_ID = f"evil/{HOSTILE}.sql"
# what only an authenticated reader may see: the campaign's title, target and owners
SECRETS = (b"Move plays to analytics_v2", b"analytics_v2.plays", b"data-platform", b"team-")


# --- HTTP ----------------------------------------------------------------------------------

def call(env: AirflowEnv, method: str, path: str, *, token: str | None = None,
         body: dict | None = None, cookie: str | None = None,
         headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; never raises on an HTTP error."""
    request = urllib.request.Request(env.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if cookie:
        request.add_header("Cookie", f"_token={cookie}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(env, path: str, user: str = "admin"):
    status, _, body = call(env, "GET", path, token=env.token(user))
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


def post_json(env, path: str, body: dict, user: str = "admin") -> tuple[int, dict]:
    status, _, raw = call(env, "POST", path, token=env.token(user), body=body)
    return status, json.loads(raw or b"{}")


def q(consumer_id: str) -> str:
    return urllib.parse.quote(consumer_id, safe="/")


def api(path: str = "") -> str:
    return f"/skein/api/v1{path}"


# --- tokens Airflow refuses ------------------------------------------------------------------

def forged_tokens(env: AirflowEnv) -> dict[str, str]:
    """Tokens Airflow must refuse: expired (signed with the server's key), signed with another
    key, and garbage."""
    import jwt

    real = env.token("admin")
    header, claims = jwt.get_unverified_header(real), jwt.decode(real, options={"verify_signature": False})
    config = configparser.ConfigParser(interpolation=None)
    config.read(env.home / "airflow.cfg")
    secret = config["api_auth"]["jwt_secret"]
    past = datetime.now(UTC) - timedelta(hours=2)
    expired = {**claims, "iat": past, "nbf": past, "exp": past + timedelta(minutes=5)}
    return {"expired": jwt.encode(expired, secret, algorithm=header["alg"], headers={"kid": header.get("kid")}),
            "wrong key": jwt.encode(claims, "not-the-server-key", algorithm=header["alg"],
                                    headers={"kid": header.get("kid")}),
            "garbage": "garbage.token.value"}


# --- the world -------------------------------------------------------------------------------

def store_of(env: AirflowEnv):
    from skein.store import CampaignStore

    return CampaignStore(f"sqlite:///{env.home / 'skein' / 'store.db'}")


def plant_hostile_consumer(env: AirflowEnv, run_id: str) -> None:
    """A consumer whose id, owner, reason, diff and audit note are hostile markup, planned in
    the run (what a repository of an untrusted team could make Skein show)."""
    from skein.pipeline import run_directory
    from skein.rundir import file_name
    from skein.views.status import example_row

    store = store_of(env)
    store.index_consumers(CAMPAIGN, run_id, [example_row(
        HOSTILE_ID, seq=10_000, owner=f"team {HOSTILE}", wave="everyone", reason=f"why {HOSTILE}")])
    store.record(CAMPAIGN, run_id, "task:test", "patched", consumer=HOSTILE_ID, agent="rule")
    directory = run_directory(CAMPAIGN, run_id, env.home / "skein")
    (directory / "patches" / f"{file_name(HOSTILE_ID)}.diff").write_text(
        f"--- a/{HOSTILE_ID}\n+++ b/{HOSTILE_ID}\n@@ -1 +1 @@\n-SELECT 1 -- {HOSTILE}\n+SELECT 2 -- {HOSTILE}\n")
    name = file_name(HOSTILE_ID)
    (directory / "simulation" / f"{name}.json").write_text(json.dumps({
        "id": HOSTILE_ID, "status": "fail", "reason": f"rows differ {HOSTILE}", "old_rows": 1,
        "new_rows": 1, "samples": [{"side": "old", HOSTILE: HOSTILE}], "expectations": [
            {"type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": HOSTILE},
             "origin": HOSTILE, "success": False}]}))
    attempt = {"number": 1, "prompt": f"Rewrite {HOSTILE}", "answer": {"text": HOSTILE, "explanation": HOSTILE},
               "verdict": {"results": [{"name": "scope", "passed": False, "feedback": HOSTILE}]},
               "error": None, "model": "test", "started_at": "2026-12-01T00:00:00Z"}
    (directory / "llm" / f"{name}.json").parent.mkdir(exist_ok=True)
    (directory / "llm" / f"{name}.json").write_text(json.dumps({
        "consumer_id": HOSTILE_ID, "agent": "llm", "outcome": "escalation", "model": HOSTILE,
        "hint": HOSTILE, "attempts": [attempt], "duration_s": 0.5}))
    store.dispose()


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("portal")
    campaigns = tmp / "campaigns"
    campaigns.mkdir()
    fleet = tmp / "fleet"
    subprocess.run([str(ROOT / ".venv" / "bin" / "skein"), "demo-fleet", "--out", str(fleet),
                    "--consumers", "40"], check=True, capture_output=True)
    for name in (CAMPAIGN, QUIET):
        path = campaign_file(fleet, name, campaigns)
        spec = yaml.safe_load(path.read_text())
        spec["notifications"] = {"slack_conn_id": "skein_slack"}
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    webhook = Webhook()
    extra = {
        "AIRFLOW__CORE__AUTH_MANAGER": "portal_auth.RestrictedAuthManager",
        "SKEIN_TEST_NO_DAG_ACCESS": "mallory", "SKEIN_TEST_NO_DAG_ACCESS_DAGS": DAG,
        "PYTHONPATH": ":".join(str(ROOT / d) for d in ("plugins", "include", "tests")),
        "AIRFLOW_CONN_SKEIN_SLACK": json.dumps({
            "conn_type": "slackwebhook", "host": f"127.0.0.1:{webhook.server_address[1]}",
            "schema": "http", "password": "skein/hook"}),
    }
    env = AirflowEnv(tmp / "airflow", campaigns, USERS, extra).start()
    try:
        env.wait_for_dag(DAG)
        run = env.trigger(DAG)
        env.wait_for_approval(DAG, run, "approval")
        plant_hostile_consumer(env, run)
        consumers = get_json(env, api(f"/campaigns/{CAMPAIGN}/consumers?limit=500&wave=everyone&status=pending"))
        ids = [c["id"] for c in consumers["items"] if c["id"] != HOSTILE_ID]
        yield {"env": env, "run": run, "webhook": webhook, "sample": ids[0], "skip": ids[1],
               "escalate": ids[2], "tokens": forged_tokens(env)}
    finally:
        env.stop()
        webhook.shutdown()


def audit_of(env, action: str) -> list[dict]:
    return [e for e in get_json(env, api(f"/campaigns/{CAMPAIGN}/audit?limit=500"))["items"]
            if e["action"] == action]


# --- the plugin ----------------------------------------------------------------------------

def test_airflow_loads_the_plugin_once_with_its_app_and_nav_entry(portal):
    env = portal["env"]
    plugins = {p["name"]: p for p in env.get("/api/v2/plugins")["plugins"]}
    skein = plugins["skein_portal"]
    assert [(a["name"], a["url_prefix"]) for a in skein["fastapi_apps"]] == [("Skein", "/skein")]
    assert [(v["name"], v["href"], v["destination"]) for v in skein["external_views"]] == [
        ("Skein", "/skein/", "nav")]
    errors = env.get("/api/v2/plugins/importErrors")["import_errors"]
    assert not [e for e in errors if "skein" in json.dumps(e)], errors


# --- every route -----------------------------------------------------------------------------

def portal_routes():
    """(method, path template, route) of every route of the portal app."""
    from fastapi.routing import APIRoute

    from skein_airflow.portal.app import create_app

    return [(method, route.path, route) for route in create_app().routes
            if isinstance(route, APIRoute) for method in sorted(route.methods)]


def concrete(path: str, portal: dict) -> str:
    """A route's path with real values (the campaign, a consumer, a doc, an asset)."""
    values = {"campaign_id": CAMPAIGN, "consumer_id:path": q(portal["sample"]), "name": "portal.css"
              if path.startswith("/static") else "architecture", "owner": "an-owner"}
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    assert "{" not in path, path
    return "/skein" + path


def test_every_route_declares_the_airflow_user_dependency():
    """Walk the app's routes: each has ``portal_user`` in its dependency tree (so a route added
    later without it fails here, before it serves anything)."""
    from skein_airflow.portal.auth import portal_user

    def calls(dependant):
        for dep in dependant.dependencies:
            yield dep.call
            yield from calls(dep)

    routes = portal_routes()
    assert len(routes) >= 20
    missing = [(m, p) for m, p, route in routes if portal_user not in set(calls(route.dependant))]
    assert not missing, missing


def test_no_route_answers_without_a_valid_airflow_user(portal):
    env, tokens = portal["env"], portal["tokens"]
    leaks = []
    for method, template, _ in portal_routes():
        path = concrete(template, portal)
        body = {"reason": "x", "option": "Approve all"} if method == "POST" else None
        for label, kwargs in [("anonymous", {}), *((f"{name} token", {"token": t}) for name, t in tokens.items()),
                              ("garbage cookie", {"cookie": tokens["garbage"]}),
                              ("expired cookie", {"cookie": tokens["expired"]})]:
            status, headers, raw = call(env, method, path, body=body, **kwargs)
            # nothing of the campaign in the refusal (a page's login link names the page asked)
            if status != 401 or any(secret in raw for secret in SECRETS):
                leaks.append((method, path, label, status, raw[:120]))
    assert not leaks, leaks
    # what a refused call says: JSON for the API, Airflow's login for pages
    status, headers, raw = call(env, "GET", api("/campaigns"))
    assert json.loads(raw) == {"detail": "Not authenticated"} and headers["www-authenticate"] == "Bearer"
    status, _, raw = call(env, "GET", "/skein/", cookie=tokens["expired"])
    assert status == 401 and b"/auth/login?next=" in raw and b'http-equiv="refresh"' in raw


def test_reads_need_read_access_to_the_campaigns_dag(portal):
    env = portal["env"]
    refused = []
    for method, template, _ in portal_routes():
        if method != "GET" or "{campaign_id}" not in template:
            continue
        status, _, raw = call(env, method, concrete(template, portal), token=env.token("mallory"))
        if status != 403:
            refused.append((template, status))
    assert not refused, refused
    assert [r["campaign"] for r in get_json(env, api("/campaigns"), "mallory")] == [QUIET]
    assert {r["campaign"] for r in get_json(env, api("/campaigns"), "vic")} == {CAMPAIGN, QUIET}
    assert get_json(env, api(f"/campaigns/{CAMPAIGN}"), "vic")["can_edit"] is False


def test_actions_need_edit_access_to_the_campaigns_dag(portal):
    env = portal["env"]
    wrong = []
    for method, template, _ in portal_routes():
        if method != "POST":
            continue
        for user in ("vic", "mallory"):
            status, _, raw = call(env, method, concrete(template, portal), token=env.token(user),
                                  body={"reason": "x", "option": "Approve all"})
            if status != 403:
                wrong.append((template, user, status))
    assert not wrong, wrong
    assert not [e for e in get_json(env, api(f"/campaigns/{CAMPAIGN}/audit?limit=500"))["items"]
                if e["actor"] in ("user:vic", "user:mallory")]


# --- reads -----------------------------------------------------------------------------------

def test_catalog_lists_state_counts_and_last_run(portal):
    env = portal["env"]
    rows = {r["campaign"]: r for r in get_json(env, api("/campaigns"))}
    row = rows[CAMPAIGN]
    assert row["state"] == "awaiting approval" and row["last_run"]["run_id"] == portal["run"]
    assert row["owners"] == ["data-platform"] and row["source"] == "analytics.plays"
    assert row["consumers"] == sum(row["counts"].values()) > 30
    assert row["escalations"] == row["counts"]["escalated"] and row["errors"] == row["counts"].get("failed", 0)
    assert rows[QUIET]["state"] == "not started" and rows[QUIET]["consumers"] == 0


def test_campaign_detail_has_waves_owners_and_the_pending_approval(portal):
    env = portal["env"]
    out = get_json(env, api(f"/campaigns/{CAMPAIGN}"), "alice")
    d = out["detail"]
    assert [w["name"] for w in d["waves"]] == ["canary", "everyone"]
    assert sum(w["consumers"] for w in d["waves"]) > 0
    assert sum(o["consumers"] for o in d["owners"]) == d["row"]["consumers"]
    request = out["approval_request"]
    assert request["task_id"] == "approval" and request["approvers"] == ["alice"]
    assert request["options"] == ["Approve all", "Approve canary only", "Reject"]
    assert out["can_approve"] is True and out["dag_id"] == DAG
    assert get_json(env, api(f"/campaigns/{CAMPAIGN}"), "bob")["can_approve"] is False
    status, _, _ = call(env, "GET", api("/campaigns/no-such-campaign"), token=env.token("admin"))
    assert status == 404


def test_consumers_are_filtered_and_paged_by_the_server(portal):
    env = portal["env"]
    everything = get_json(env, api(f"/campaigns/{CAMPAIGN}/consumers?limit=500"))
    first = get_json(env, api(f"/campaigns/{CAMPAIGN}/consumers?limit=7&offset=0"))
    second = get_json(env, api(f"/campaigns/{CAMPAIGN}/consumers?limit=7&offset=7"))
    assert first["total"] == everything["total"] and len(first["items"]) == 7
    assert [c["id"] for c in first["items"] + second["items"]] == [c["id"] for c in everything["items"][:14]]
    owner = everything["items"][0]["owner"]
    mine = get_json(env, api(f"/campaigns/{CAMPAIGN}/consumers?owner={urllib.parse.quote(owner)}&status=pending"))
    assert mine["total"] == sum(c["owner"] == owner and c["status"] == "pending" for c in everything["items"])
    views = get_json(env, api(f"/campaigns/{CAMPAIGN}/consumers?kind=view&tier=1&wave=canary"))
    assert all((c["kind"], c["tier"], c["wave"]) == ("view", 1, "canary") for c in views["items"])
    for bad in ("limit=0", "limit=501", "offset=-1", "tier=x"):
        assert call(env, "GET", api(f"/campaigns/{CAMPAIGN}/consumers?{bad}"), token=env.token("admin"))[0] == 422


def test_consumer_detail_has_the_diff_dry_run_and_audit(portal):
    env, cid = portal["env"], portal["sample"]
    c = get_json(env, api(f"/campaigns/{CAMPAIGN}/consumers/{q(cid)}"), "vic")
    assert c["summary"]["id"] == cid and c["diff"].startswith(f"--- a/{cid}")
    assert c["simulation"]["status"] == "pass" and isinstance(c["simulation"]["expectations"], list)
    assert c["agent"]["kind"] == "patch" and [e["action"] for e in c["history"]][:1] == ["patched"]
    status, _, _ = call(env, "GET", api(f"/campaigns/{CAMPAIGN}/consumers/nowhere/x.sql"), token=env.token("admin"))
    assert status == 404


def test_burndown_audit_docs_and_schema(portal):
    env = portal["env"]
    burndown = get_json(env, api(f"/campaigns/{CAMPAIGN}/burndown"))
    assert burndown["total"] == burndown["remaining"] > 0 and burndown["points"]
    audit = get_json(env, api(f"/campaigns/{CAMPAIGN}/audit?limit=5"))
    assert len(audit["items"]) == 5 and audit["total"] > 5
    assert audit["items"][0]["id"] > audit["items"][-1]["id"]  # newest first
    docs = get_json(env, api("/docs"))
    assert {"architecture", "portal"} <= {d["name"] for d in docs}
    page = get_json(env, api("/docs/architecture"))
    assert page["html"].startswith("<h1>") and "<script" not in page["html"]
    assert call(env, "GET", api("/docs/..%2FREADME"), token=env.token("admin"))[0] == 404
    schema = get_json(env, "/skein/openapi.json")
    assert f"/api/v1/campaigns/{{campaign_id}}/pause" in schema["paths"]
    assert not [p for p in schema["paths"] if not p.startswith("/api/v1/")]


def test_pages_work_with_the_browser_session_cookie(portal):
    env = portal["env"]
    cookie = env.token("vic")
    for path in ("/skein/", f"/skein/campaigns/{CAMPAIGN}", f"/skein/campaigns/{CAMPAIGN}?status=pending&offset=5",
                 f"/skein/campaigns/{CAMPAIGN}/consumers/{q(portal['sample'])}", "/skein/docs",
                 "/skein/docs/portal", "/skein/static/portal.css", "/skein/static/portal.js"):
        status, headers, raw = call(env, "GET", path, cookie=cookie)
        assert status == 200, (path, status, raw[:200])
        assert "script-src 'self'" in headers["content-security-policy"]
    status, _, raw = call(env, "GET", f"/skein/campaigns/{CAMPAIGN}", cookie=cookie)
    assert portal["sample"].encode() in raw and b"Approval waiting" in raw
    assert b"Pause" not in raw  # a viewer gets no buttons (and the API refuses them anyway)
    assert call(env, "GET", "/skein/static/../portal_plugin.py", cookie=cookie)[0] == 404
    assert call(env, "GET", f"/skein/campaigns/{CAMPAIGN}", cookie=env.token("mallory"))[0] == 403


# --- actions, each audited with who ------------------------------------------------------------

def test_pause_and_resume_are_audited_with_the_user(portal):
    env = portal["env"]
    path = api(f"/campaigns/{CAMPAIGN}")
    assert post_json(env, f"{path}/pause", {"reason": "owners asked"}, "bob")[0] == 200
    assert get_json(env, path)["detail"]["row"]["state"] == "paused"
    status, answer = post_json(env, f"{path}/pause", {}, "alice")
    assert status == 409 and "already paused (by user:bob)" in answer["detail"]
    assert post_json(env, f"{path}/resume", {}, "alice")[0] == 200
    assert post_json(env, f"{path}/resume", {}, "alice")[0] == 409
    paused, resumed = audit_of(env, "campaign_paused"), audit_of(env, "campaign_resumed")
    assert [(e["actor"], e["message"]) for e in paused] == [("user:bob", "owners asked")]
    assert [e["actor"] for e in resumed] == ["user:alice"]
    logged = env.get("/api/v2/eventLogs?event=skein_portal.pause")["event_logs"]
    assert sorted(e["owner"] for e in logged) == ["alice", "bob"]  # Airflow's audit log, both tries


def test_skip_and_escalate_are_audited_and_notified(portal):
    env, webhook = portal["env"], portal["webhook"]
    base = api(f"/campaigns/{CAMPAIGN}/consumers")
    assert post_json(env, f"{base}/{q(portal['skip'])}/skip", {"reason": "owner on holiday"}, "alice")[0] == 200
    status, answer = post_json(env, f"{base}/{q(portal['escalate'])}/escalate", {"reason": "needs a review"}, "bob")
    assert status == 200 and "notified: slack" in answer["message"], answer
    assert post_json(env, f"{base}/{q(portal['escalate'])}/escalate", {"reason": ""}, "bob")[0] == 422
    assert post_json(env, f"{base}/{q(portal['skip'])}/skip", {}, "bob")[0] == 409
    assert post_json(env, f"{base}/nowhere/x.sql/skip", {}, "bob")[0] == 409
    assert [(e["actor"], e["consumer"]) for e in audit_of(env, "consumer_skipped")] == [("user:alice", portal["skip"])]
    assert [(e["actor"], e["message"]) for e in audit_of(env, "consumer_escalated")] == [("user:bob", "needs a review")]
    assert any(portal["escalate"] in text and "escalated by bob" in text for text in webhook.texts())
    statuses = {c["id"]: c["status"] for c in get_json(env, f"{base}?limit=500")["items"]}
    assert statuses[portal["skip"]] == "skipped" and statuses[portal["escalate"]] == "escalated"


def test_retry_marks_failed_consumers(portal):
    env = portal["env"]
    store = store_of(env)
    store.record(CAMPAIGN, portal["run"], "task:test", "apply_failed", consumer=HOSTILE_ID, message="boom")
    store.dispose()
    status, answer = post_json(env, api(f"/campaigns/{CAMPAIGN}/retry-failed"), {}, "bob")
    assert status == 200 and answer["consumers"] == [HOSTILE_ID]
    assert [(e["actor"], e["consumer"]) for e in audit_of(env, "retry_requested")] == [("user:bob", HOSTILE_ID)]
    assert get_json(env, api(f"/campaigns/{CAMPAIGN}/consumers/{q(HOSTILE_ID)}"))["retry_pending"] is True
    assert post_json(env, api(f"/campaigns/{CAMPAIGN}/retry-failed"), {}, "bob")[1]["consumers"] == []


def test_hostile_consumer_text_is_escaped_everywhere(portal):
    env = portal["env"]
    cookie = env.token("admin")
    owner = urllib.parse.quote(f"team {HOSTILE}")
    for path in (f"/skein/campaigns/{CAMPAIGN}", f"/skein/campaigns/{CAMPAIGN}?owner={owner}",
                 f"/skein/campaigns/{CAMPAIGN}/consumers/{q(HOSTILE_ID)}",
                 f"/skein/campaigns/{CAMPAIGN}?search={urllib.parse.quote('<script>')}"):
        status, headers, raw = call(env, "GET", path, cookie=cookie)
        html = raw.decode()
        assert status == 200, (path, status)
        assert "<script>alert" not in html and "<img src=x" not in html and "onerror=alert(1)>" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html or "%3Cscript%3E" in html, path
    status, headers, raw = call(env, "GET", api(f"/campaigns/{CAMPAIGN}/consumers/{q(HOSTILE_ID)}"),
                                token=cookie)
    assert headers["content-type"] == "application/json" and json.loads(raw)["summary"]["id"] == HOSTILE_ID
    detail = json.loads(raw)
    assert HOSTILE in detail["diff"] and detail["transcripts"][0]["attempts"][0]["answer"]["text"] == HOSTILE
    assert detail["simulation"]["samples"][0][HOSTILE] == HOSTILE
    # acting on it: the id travels in the path, the reason in JSON, both land verbatim in the audit
    status, _ = post_json(env, api(f"/campaigns/{CAMPAIGN}/consumers/{q(HOSTILE_ID)}/escalate"),
                          {"reason": HOSTILE}, "alice")
    assert status == 200
    assert [e["message"] for e in audit_of(env, "consumer_escalated") if e["consumer"] == HOSTILE_ID] == [HOSTILE]


def test_a_cross_site_post_is_refused(portal):
    env = portal["env"]
    status, _, raw = call(env, "POST", api(f"/campaigns/{CAMPAIGN}/pause"), cookie=env.token("alice"),
                          body={}, headers={"Origin": "http://evil.example"})
    assert status == 403 and b"cross-site" in raw
    assert not [e for e in audit_of(env, "campaign_paused") if e["actor"] == "user:alice"]


# --- the approval, through Airflow's HITL ------------------------------------------------------

def approve_in_portal(env: AirflowEnv, run: str, user: str, option: str, timeout: float = 180) -> dict:
    """Answer in the portal and see the run take it; when Airflow lost the answer (see
    ``AirflowEnv.wait_for_approval``) the approval's retry asks again: answer again."""
    deadline = time.time() + timeout
    status, answer = post_json(env, api(f"/campaigns/{CAMPAIGN}/approval"), {"option": option}, user)
    assert status == 200, answer
    while time.time() < deadline:
        state = env.get(f"/api/v2/dags/{DAG}/dagRuns/{run}/taskInstances/approval")["state"]
        if state == "success":
            return answer
        assert state not in ("failed", "upstream_failed"), state
        if state == "awaiting_input" and get_json(env, api(f"/campaigns/{CAMPAIGN}"))["approval_request"]:
            env.wait_for_approval(DAG, run, "approval")
            status, answer = post_json(env, api(f"/campaigns/{CAMPAIGN}/approval"), {"option": option}, user)
        time.sleep(1)
    raise TimeoutError("the approval did not take the portal's answer")


def test_approval_through_airflow_hitl_by_the_assigned_approver_only(portal):
    env, run = portal["env"], portal["run"]
    path = api(f"/campaigns/{CAMPAIGN}/approval")
    status, answer = post_json(env, path, {"option": "Approve all"}, "bob")
    assert status == 403 and "not a respondent" in answer["detail"]  # Airflow's own check
    assert post_json(env, path, {"option": "Approve all"}, "vic")[0] == 403
    assert post_json(env, path, {"option": "Approve everything"}, "alice")[0] == 400
    approve_in_portal(env, run, "alice", "Approve all")
    # Required Actions agree: Airflow's HITL detail holds the portal's answer, by alice
    detail = env.get(f"/api/v2/dags/{DAG}/dagRuns/{run}/taskInstances/approval/-1/hitlDetails")
    assert detail["chosen_options"] == ["Approve all"] and detail["responded_by_user"]["id"] == "alice"
    assert [e["actor"] for e in audit_of(env, "approval_answered")][-1] == "user:alice"
    assert env.wait_for_run(DAG, run) == "success", env.task_states(DAG, run)
    assert [e["actor"] for e in audit_of(env, "approved")] == ["user:alice"]
    held = {e["consumer"] for e in audit_of(env, "held")}
    assert {portal["skip"], portal["escalate"]} <= held
    applied = {e["consumer"] for e in audit_of(env, "applied")}
    assert applied and not applied & {portal["skip"], portal["escalate"], HOSTILE_ID}
    row = next(r for r in get_json(env, api("/campaigns")) if r["campaign"] == CAMPAIGN)
    # not done: the demo's escalated consumers and the two held ones still read the source
    assert row["state"] == "applied" and row["counts"]["applied"] == len(applied)
    assert "need a human" in row["left"] and "1 skipped" in row["left"]
    assert post_json(env, path, {"option": "Approve all"}, "alice")[0] == 409  # nothing waits now
    burndown = get_json(env, api(f"/campaigns/{CAMPAIGN}/burndown"))
    assert burndown["remaining"] < burndown["total"]


def test_release_pause_and_resume_steer_live_runs(portal):
    """After the first run (the approval test above): the skipped consumer is released in the
    portal; a second run is paused in the portal while it waits for its approval, so it
    applies nothing and ends ``paused``; resumed, a third run applies the released consumer,
    and nothing is ever applied twice."""
    env = portal["env"]
    base, path = api(f"/campaigns/{CAMPAIGN}/consumers"), api(f"/campaigns/{CAMPAIGN}")
    status, answer = post_json(env, f"{base}/{q(portal['skip'])}/release", {"reason": "owner is back"}, "alice")
    assert status == 200 and "later waves again" in answer["message"], answer
    assert post_json(env, f"{base}/{q(portal['skip'])}/release", {}, "alice")[0] == 409
    assert [(e["actor"], e["message"]) for e in audit_of(env, "consumer_released")] == [
        ("user:alice", "owner is back")]
    assert get_json(env, f"{base}/{q(portal['skip'])}")["summary"]["status"] == "pending"
    page = call(env, "GET", f"/skein/campaigns/{CAMPAIGN}/consumers/{q(portal['escalate'])}",
                cookie=env.token("alice"))[2].decode()
    assert f"consumers/{q(portal['escalate'])}/release" in page and "Undo the escalation" in page

    # paused before the run asks: its approval says so, and what a person holds (issue 20)
    assert post_json(env, f"{path}/pause", {"reason": "freeze"}, "bob")[0] == 200
    second = env.trigger(DAG)
    env.wait_for_approval(DAG, second, "approval")
    body = get_json(env, path, "alice")["approval_request"]["body"]
    assert "**The campaign is paused** by user:bob" in body and "(freeze)" in body, body
    assert f"`{portal['escalate']}`](" in body and "escalated by user:" in body, body
    approve_in_portal(env, second, "alice", "Approve all")
    assert env.wait_for_run(DAG, second) == "success", env.task_states(DAG, second)
    outcome = env.get(f"/api/v2/dags/{DAG}/dagRuns/{second}/taskInstances/finalize/xcomEntries/return_value")
    assert outcome["value"]["status"] == "paused" and outcome["value"]["applied"] == 0
    skipped = {e["wave"] for e in audit_of(env, "wave_skipped") if e["run_id"] == second}
    assert skipped == {"canary", "everyone"}
    assert get_json(env, path)["detail"]["row"]["state"] == "paused"

    assert post_json(env, f"{path}/resume", {}, "bob")[0] == 200
    third = env.trigger(DAG)
    env.wait_for_approval(DAG, third, "approval")
    approve_in_portal(env, third, "alice", "Approve all")
    assert env.wait_for_run(DAG, third) == "success", env.task_states(DAG, third)
    applied = [(e["consumer"], e["run_id"]) for e in audit_of(env, "applied")]
    assert (portal["skip"], third) in applied
    assert len({c for c, _ in applied}) == len(applied)  # each consumer applied once, ever
    assert portal["escalate"] not in {c for c, _ in applied}
