"""The portal in a real browser (Debian's chromium, driven by Playwright) on a real Airflow:
log in to Airflow, open the portal from Airflow's navigation, see the campaign's progress,
open a consumer's diff, skip it, answer the approval; the run then applies the rest.

Screenshots of each step go to ``test-artifacts/portal/`` (``$SKEIN_TEST_ARTIFACTS``).
Needs ``/usr/bin/chromium`` (``make test`` installs it through ``scripts/browser.sh``); skipped without, except in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from airflow_env import ROOT, AirflowEnv
from test_campaign_e2e import campaign_file

CHROMIUM = Path("/usr/bin/chromium")
# `make test` installs it (scripts/browser.sh) where it can; in CI it always can, so a missing
# browser there fails the test instead of skipping it.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                                 reason="needs Debian's chromium (scripts/browser.sh, run by make test)")]
CAMPAIGN, DAG = "plays-v2", "skein__plays-v2"
ARTIFACTS = Path(os.environ.get("SKEIN_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "portal"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("portal-browser")
    campaigns = tmp / "campaigns"
    campaigns.mkdir()
    subprocess.run([str(ROOT / ".venv" / "bin" / "skein"), "demo-fleet", "--out", str(tmp / "fleet"),
                    "--consumers", "40"], check=True, capture_output=True)
    path = campaign_file(tmp / "fleet", CAMPAIGN, campaigns)
    spec = yaml.safe_load(path.read_text())
    spec["notifications"] = {}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = AirflowEnv(tmp / "airflow", campaigns, {"admin": "admin", "alice": "user"}).start()
    try:
        env.wait_for_dag(DAG)
        yield env
    finally:
        env.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # root in a container: chromium's sandbox needs user namespaces it may not have
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def audit(env: AirflowEnv, action: str) -> list[dict]:
    items = env.get(f"/skein/api/v1/campaigns/{CAMPAIGN}/audit?limit=500")["items"]
    return [e for e in items if e["action"] == action]


def test_log_in_open_the_portal_skip_a_consumer_and_approve(airflow, browser):
    env = airflow
    run = env.trigger(DAG)
    env.wait_for_approval(DAG, run, "approval")  # and waits as a person would (see there)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # log in to Airflow, open the portal from Airflow's navigation
    page.goto(env.base + "/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(env.password("alice"))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(env.base + "/", timeout=60_000)
    shot(page, "01-airflow-home")
    page.get_by_role("link", name="Skein", exact=True).click()
    page.wait_for_url("**/plugin/skein**")
    portal = page.frame_locator("iframe")
    row = portal.locator(f"tr[data-campaign='{CAMPAIGN}']")
    row.wait_for()
    assert "awaiting approval" in row.inner_text()
    shot(page, "02-catalog-in-airflow")

    # the campaign: progress, waves, the approval waiting
    row.get_by_role("link", name=CAMPAIGN).click()
    portal.locator("#approval").wait_for()
    assert portal.locator(".progress svg.bar rect").count() >= 2
    # before anything is applied: words, not an empty box; the total explained
    assert "Nothing applied yet" in portal.locator("figure.burndown").inner_text()
    assert "read the source directly" in portal.locator("figure.burndown figcaption").inner_text()
    assert portal.locator("#waves tbody tr").count() == 2
    shot(page, "03-campaign")

    # a consumer of the second wave: its diff; skip it
    pending = env.get(f"/skein/api/v1/campaigns/{CAMPAIGN}/consumers?status=pending&wave=everyone&limit=1")
    victim = pending["items"][0]["id"]
    portal.locator(f"tr[data-consumer='{victim}'] a").click()
    diff = portal.locator("#diff")
    diff.wait_for()
    assert "analytics_v2.plays" in diff.inner_text().lower() and portal.locator("#diff .add").count() >= 1
    shot(page, "04-consumer-diff")
    portal.locator("form.action", has_text="Skip").locator("input[name=reason]").fill("owner on holiday")
    portal.get_by_role("button", name="Skip this consumer").click()
    portal.locator("h1 .badge", has_text="skipped").wait_for(timeout=30_000)
    shot(page, "05-consumer-skipped")
    skipped = audit(env, "consumer_skipped")
    assert [(e["actor"], e["consumer"], e["message"]) for e in skipped] == [
        ("user:alice", victim, "owner on holiday")]

    # back to the campaign: answer the approval
    portal.get_by_role("link", name=CAMPAIGN).first.click()
    approve(env, run, page)
    shot(page, "06-approved")
    assert env.wait_for_run(DAG, run) == "success", env.task_states(DAG, run)
    open_campaign(env, page)
    shot(page, "07-done")
    # not done: the skipped consumer (and the demo's escalated ones) still read the source
    assert portal.locator("h1 .badge").inner_text() == "applied", portal.locator("h1").inner_text()
    assert "1 skipped" in portal.locator("h1 .left").inner_text()
    assert [e["actor"] for e in audit(env, "approved")] == ["user:alice"]
    applied = {e["consumer"] for e in audit(env, "applied")}
    assert applied and victim not in applied
    assert victim in {e["consumer"] for e in audit(env, "held")}
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems


def open_campaign(env: AirflowEnv, page) -> None:
    """Load the campaign's page again in the portal's frame (inside Airflow's page)."""
    frame = next(f for f in page.frames if f.parent_frame is not None)
    frame.goto(f"{env.base}/skein/campaigns/{CAMPAIGN}")


def approve(env: AirflowEnv, run: str, page, timeout: float = 180) -> None:
    """Click "Approve all"; when Airflow lost the answer (``AirflowEnv.wait_for_approval``)
    the approval asks again: click again once it does."""
    portal = page.frame_locator("iframe")
    deadline = time.time() + timeout
    while time.time() < deadline:
        portal.locator("#approval").wait_for()
        portal.get_by_role("button", name="Approve all").click()
        portal.locator("#approval output.ok").wait_for(timeout=30_000)
        while time.time() < deadline:
            state = env.get(f"/api/v2/dags/{DAG}/dagRuns/{run}/taskInstances/approval")["state"]
            if state == "success":
                return
            pending = env.get(f"/api/v2/dags/{DAG}/dagRuns/{run}/hitlDetails?response_received=false")
            if state == "awaiting_input" and pending["hitl_details"]:
                env.wait_for_approval(DAG, run, "approval")
                open_campaign(env, page)
                break
            time.sleep(1)
    raise TimeoutError(f"the approval did not take the answer: {json.dumps(env.task_states(DAG, run))}")
