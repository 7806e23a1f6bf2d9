"""Issue 18, what the applier may write: no consumer overwritten by another's patch, no patch
applied without its dry run, a write a crashed run made audited by the next run, odd
repositories (gitattributes, glob characters in names) migrated, run ids and ``plan --out``
folders that cannot mix up files, and an exit code that says when consumers failed.

Each test builds a small real world under ``tmp_path`` (a DuckDB warehouse, git
repositories, a campaign file) and goes through ``skein``'s own entry point where it can.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import make_git_repo
from skein.cli import main as skein
from skein.rundir import consumer_id, file_name
from skein.store import CampaignStore
from test_bad_input import commit_all, git, run_json
from test_spec import GOOD

READER = "SELECT user_id, ms_played FROM analytics.plays\n"
CAMPAIGN_ID = "plays-v2"


def make_world(tmp_path: Path, monkeypatch, repos: dict[str, dict[str, str]], *,
               refutable: bool = False, views: list[str] = ()) -> Path:
    """A warehouse, ``repos`` (name -> files) under ``repos/`` and the campaign file.
    ``refutable``: the target's durations are off by one second, so every patch reading
    ``ms_played`` changes results and its dry run refutes it. ``views``: warehouse views
    (then the campaign migrates warehouse views too)."""
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2")
    con.execute("CREATE TABLE analytics.plays AS SELECT i AS user_id, i * 1000 AS ms_played, "
                "false AS legacy_flag FROM range(50) t(i)")
    offset = " + 1" if refutable else ""
    con.execute("CREATE TABLE analytics_v2.plays AS SELECT i AS account_id, "
                f"i{offset} AS duration_s FROM range(50) t(i)")
    for view in views:
        con.execute(view)
    con.close()
    for name, files in repos.items():
        make_git_repo(tmp_path / "repos" / name, files)
    monkeypatch.setenv("SKEIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKEIN_STORE_URL", raising=False)
    campaign = tmp_path / "c.yaml"
    campaign.write_text(GOOD if views else GOOD.replace("  - warehouse_views: true\n", ""))
    return campaign


def events(tmp_path: Path, run_id: str | None = None):
    return CampaignStore(f"sqlite:///{tmp_path / 'home' / 'store.db'}").events(CAMPAIGN_ID, run_id)


def applied_counts(tmp_path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events(tmp_path):
        if e.action == "applied":
            out[e.consumer] = out.get(e.consumer, 0) + 1
    return out


def merges(repo: Path) -> int:
    return len(git(repo, "log", "--merges", "--format=%H").split())


# --- item 2: consumer ids collide in the run directory ---------------------------------------

COLLIDING = {"growth": {"x/y.sql": "SELECT user_id FROM analytics.plays\n"},
             "growth__x": {"y.sql": "SELECT ms_played FROM analytics.plays WHERE user_id > 3\n"}}
REWRITES = {"growth/x/y.sql": "SELECT account_id AS user_id FROM analytics_v2.plays\n",
            "growth__x/y.sql": ("SELECT duration_s * 1000 AS ms_played FROM analytics_v2.plays "
                                "WHERE account_id > 3\n")}


def test_colliding_consumer_ids_each_keep_their_own_files(tmp_path, monkeypatch, capsys):
    campaign = make_world(tmp_path, monkeypatch, COLLIDING)
    out = tmp_path / "plan"

    assert skein(["plan", str(campaign), "--out", str(out), "--workers", "1"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert {i["id"]: i["status"] for i in plan["items"]} == {c: "patched" for c in REWRITES}
    for cid, text in REWRITES.items():
        assert (out / "patched" / file_name(cid)).read_text() == text
        assert f"b/{cid}" in (out / "patches" / f"{file_name(cid)}.diff").read_text()
        assert json.loads((out / "agents" / f"{file_name(cid)}.json").read_text())["consumer_id"] == cid
        assert json.loads((out / "evidence" / f"{file_name(cid)}.json").read_text())["id"] == cid
    summary = (out / "summary.md").read_text()
    assert "(evidence/growth__x__y.sql.md)" in summary and "(evidence/growth%255F_x__y.sql.md)" in summary
    capsys.readouterr()

    code, outcome = run_json(capsys, str(campaign), "--approve", "all")
    assert code == 0 and outcome["applied"] == 2
    assert file_name("growth/x/y.sql") != file_name("growth__x/y.sql")
    assert (tmp_path / "repos/growth/x/y.sql").read_text() == REWRITES["growth/x/y.sql"]
    assert (tmp_path / "repos/growth__x/y.sql").read_text() == REWRITES["growth__x/y.sql"]


def test_a_patch_whose_base_no_longer_matches_is_refused(tmp_path, monkeypatch):
    """The patch carries the text it was computed from (``Patch.original``, its hash
    ``base_hash``): over any other content, or as another consumer's patch, it is refused
    with the reason and nothing is written, even when the plan's own record still matches."""
    from skein.approvals import OPTION_OF_SCOPE
    from skein.pipeline import (apply_wave, discover, record_decision, rewrite_consumers,
                                simulate_consumers, start_run, summarize)

    campaign = make_world(tmp_path, monkeypatch, {"growth": {"a.sql": READER, "b.sql": READER}})
    ctx = start_run(campaign, "r1")
    ids = discover(ctx, workers=1)
    rewrite_consumers(ctx, ids)
    simulate_consumers(ctx, ids)
    summarize(ctx)
    record_decision(ctx, OPTION_OF_SCOPE["all"])
    patch = ctx.results()["growth/a.sql"]
    ctx.files.write_agent_result("growth/a.sql", patch.model_copy(
        update={"original": "SELECT user_id, ms_played FROM analytics.plays -- older\n"}))
    ctx.files.write_agent_result("growth/b.sql", patch)  # a.sql's patch, found for b.sql
    ctx.forget()
    repo = tmp_path / "repos" / "growth"
    head = git(repo, "rev-parse", "HEAD")

    done = apply_wave(ctx, "canary", ["growth/a.sql", "growth/b.sql"])

    assert done.applied == [] and sorted(done.failed) == ["growth/a.sql", "growth/b.sql"]
    assert "the patch was computed from other content (base " in done.failed["growth/a.sql"]
    assert "not written; re-run the campaign to re-plan it" in done.failed["growth/a.sql"]
    assert "the patch found for it is growth/a.sql's: not written" in done.failed["growth/b.sql"]
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "branch", "--list") == "* main\n"
    assert (repo / "a.sql").read_text() == READER and (repo / "b.sql").read_text() == READER
    assert not [e for e in events(tmp_path) if e.action in ("apply_started", "applied")]


# --- item 3: patches applied without their dry run -------------------------------------------

WRITER = "INSERT INTO analytics.plays SELECT user_id + 100, ms_played, legacy_flag FROM analytics.plays\n"


def test_a_consumer_writing_the_source_lets_no_refutable_patch_through(tmp_path, monkeypatch, capsys):
    """The issue's scenario: ``a.sql`` writes the source and sorts first (escalated: it uses
    the dropped column); ``b.sql``'s patch changes results. It used to be "skipped: upstream
    analytics.plays is not migrated", stay patched and be applied."""
    campaign = make_world(tmp_path, monkeypatch, {"growth": {"a.sql": WRITER, "b.sql": READER}},
                          refutable=True)
    repo = tmp_path / "repos" / "growth"

    code, outcome = run_json(capsys, str(campaign), "--approve", "all")

    assert outcome["applied"] == 0 and outcome["refuted"] == 1
    assert code == 4  # some consumers failed: here, their dry run refuted the patch
    assert (repo / "b.sql").read_text() == READER and merges(repo) == 0
    plan = json.loads(next((tmp_path / "home" / "runs").rglob("plan.json")).read_text())
    item = {i["id"]: i for i in plan["items"]}["growth/b.sql"]
    assert item["status"] == "failed" and item["simulation"] == "fail", item
    assert not [e for e in events(tmp_path) if e.action in ("apply_started", "applied")]


FLAGS_VIEW = "CREATE VIEW analytics.flags AS SELECT user_id, legacy_flag FROM analytics.plays"
JOINED = ("SELECT p.user_id, p.ms_played FROM analytics.plays p "
          "JOIN analytics.flags f ON f.user_id = p.user_id\n")


def test_a_patch_whose_dry_run_could_not_run_is_never_applied(tmp_path, monkeypatch, capsys):
    """``b.sql`` reads the source and a view that is escalated (it uses the dropped column):
    its dry run cannot run, so its patch is escalated "not dry-run", is in no wave, and the
    approval counts and lists it."""
    from skein.pipeline import approval_text, start_run

    campaign = make_world(tmp_path, monkeypatch, {"growth": {"b.sql": JOINED}},
                          views=[FLAGS_VIEW])
    repo = tmp_path / "repos" / "growth"

    code, outcome = run_json(capsys, str(campaign), "--run-id", "r1", "--approve", "all")

    assert code == 3 and outcome["applied"] == 0 and outcome["escalated"] == 2
    assert (repo / "b.sql").read_text() == JOINED and merges(repo) == 0
    ctx = start_run(campaign, "r1")
    item = {i.id: i for i in ctx.files.plan().items}["growth/b.sql"]
    assert item.status == "escalated" and item.not_dry_run and item.simulation == "skipped"
    assert item.reason.startswith("not dry-run (upstream analytics.flags is not migrated)")
    assert ctx.files.waves() == {"canary": [], "everyone": []}
    approval = approval_text(ctx)
    assert "1 patch(es) not dry-run, so in no wave (escalated: a person decides): `growth/b.sql`" in approval
    assert "- `growth/b.sql`: escalated: not dry-run (upstream analytics.flags" in approval


# --- item 7: a plain rerun audits what a crashed run merged ----------------------------------

def skein_process(campaign: Path, tmp_path: Path, *args: str, crash_at: str | None = None):
    env = {**os.environ, "SKEIN_HOME": str(tmp_path / "home")}
    env.pop("SKEIN_STORE_URL", None)
    env.pop("SKEIN_CRASH_AT", None)
    if crash_at:
        env["SKEIN_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "skein.cli", "run", str(campaign), "--no-soak",
                           "--json", "--workers", "1", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_a_plain_rerun_audits_the_write_a_crashed_run_merged(tmp_path, monkeypatch):
    campaign = make_world(tmp_path, monkeypatch, {"growth": {"a.sql": READER, "b.sql": READER}})
    repo = tmp_path / "repos" / "growth"

    crashed = skein_process(campaign, tmp_path, "--run-id", "first", "--approve", "all",
                            crash_at="git:after_merge")
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    assert merges(repo) == 1 and "analytics_v2" in (repo / "a.sql").read_text()

    again = skein_process(campaign, tmp_path, "--approve", "all")  # a new run id

    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["status"] == "finished"
    assert applied_counts(tmp_path) == {"growth/a.sql": 1, "growth/b.sql": 1}
    found = [e for e in events(tmp_path) if e.action == "applied" and e.consumer == "growth/a.sql"]
    assert found[0].run_id != "first"
    assert found[0].detail["message"] == "found applied after an interrupted attempt of run first"
    assert merges(repo) == 2


# --- item 9: repositories Skein could never migrate, folders it mixed up, exit codes ---------

def test_gitattributes_eol_and_ident_files_are_migrated(tmp_path, monkeypatch, capsys):
    """A file checked out with CRLF (``eol=crlf``) or an expanded ``$Id$`` (``ident``) is
    read as the work tree holds it; the applier compares and stores it as git does."""
    campaign = make_world(tmp_path, monkeypatch, {"growth": {
        ".gitattributes": "crlf.sql text eol=crlf\nident.sql ident\n",
        "crlf.sql": READER, "ident.sql": "-- $Id$\n" + READER}})
    repo = tmp_path / "repos" / "growth"
    (repo / "crlf.sql").unlink()
    (repo / "ident.sql").unlink()
    git(repo, "checkout", "--", "crlf.sql", "ident.sql")  # as a fresh clone has them
    assert (repo / "crlf.sql").read_bytes() == READER.replace("\n", "\r\n").encode()
    assert (repo / "ident.sql").read_text().startswith("-- $Id: ")

    code, outcome = run_json(capsys, str(campaign), "--approve", "all")

    assert code == 0 and outcome["applied"] == 2 and outcome["failed"] == 0
    assert (repo / "crlf.sql").read_bytes() == (
        b"SELECT account_id AS user_id, duration_s * 1000 AS ms_played FROM analytics_v2.plays\r\n")
    assert git(repo, "show", "HEAD:crlf.sql").endswith("analytics_v2.plays\n")  # LF in git
    assert git(repo, "show", "HEAD:ident.sql").startswith("-- $Id$\n")
    assert "analytics_v2.plays" in (repo / "ident.sql").read_text()
    assert git(repo, "status", "--porcelain") == ""


def test_a_crashed_write_to_an_ident_file_is_recognised(tmp_path, monkeypatch):
    """The record of an apply names the bytes the file holds once committed (``$Id$``
    expanded for the new blob, CRLF), so the next run recognises the write a crash left."""
    campaign = make_world(tmp_path, monkeypatch, {"growth": {
        ".gitattributes": "*.sql ident eol=crlf\n", "a.sql": "-- $Id$\n" + READER}})
    repo = tmp_path / "repos" / "growth"
    (repo / "a.sql").unlink()
    git(repo, "checkout", "--", "a.sql")

    crashed = skein_process(campaign, tmp_path, "--run-id", "first", "--approve", "all",
                            crash_at="git:after_merge")
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    again = skein_process(campaign, tmp_path, "--run-id", "first", "--approve", "all")

    assert again.returncode == 0, again.stderr[-3000:]
    assert applied_counts(tmp_path) == {"growth/a.sql": 1} and merges(repo) == 1
    assert b"analytics_v2.plays\r\n" in (repo / "a.sql").read_bytes()


def test_glob_characters_in_file_names_are_not_pathspecs(tmp_path, monkeypatch, capsys):
    """``[ab].sql`` and ``*.sql`` are files: an uncommitted edit of ``a.sql`` (which both
    would match as patterns) does not stop them, and ``a.sql`` is left as it is."""
    campaign = make_world(tmp_path, monkeypatch, {"growth": {
        "[ab].sql": READER, "*.sql": READER, "?.sql": READER, "a.sql": "SELECT 1\n"}})
    repo = tmp_path / "repos" / "growth"
    (repo / "a.sql").write_text("SELECT 2 -- my work in progress\n")

    code, outcome = run_json(capsys, str(campaign), "--approve", "all")

    assert code == 0 and outcome["applied"] == 3 and outcome["failed"] == 0, outcome
    for name in ("[ab].sql", "*.sql", "?.sql"):
        assert "analytics_v2.plays" in (repo / name).read_text()
    assert (repo / "a.sql").read_text() == "SELECT 2 -- my work in progress\n"
    assert git(repo, "show", "HEAD:a.sql") == "SELECT 1\n"


def test_run_ids_differing_in_other_characters_get_their_own_folders(tmp_path, monkeypatch, capsys):
    campaign = make_world(tmp_path, monkeypatch, {"growth": {"a.sql": READER}})
    folders = []
    for run_id in ("team/a", "team a", "team_a"):
        code, outcome = run_json(capsys, str(campaign), "--run-id", run_id, "--approve", "none")
        assert code == 5 and outcome["status"] == "rejected"
        folders.append(outcome["directory"])
    assert len(set(folders)) == 3
    assert Path(folders[2]).name == "team_a"  # a plain id is its own folder name
    for folder in folders:
        assert Path(folder).parent == tmp_path / "home" / "runs" / CAMPAIGN_ID


def test_plan_out_refuses_a_folder_of_user_files(tmp_path, monkeypatch, capsys):
    campaign = make_world(tmp_path, monkeypatch, {"growth": {"a.sql": READER}})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "campaign.yaml").write_text("my own notes\n")
    (mine / "patches").mkdir()

    assert skein(["plan", str(campaign), "--out", str(mine), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert f"skein: --out {mine}: the folder holds files Skein did not write (campaign.yaml, " \
           "patches): give a new or empty folder, or an earlier plan's" in err
    assert (mine / "campaign.yaml").read_text() == "my own notes\n"
    assert sorted(p.name for p in mine.iterdir()) == ["campaign.yaml", "patches"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert skein(["plan", str(campaign), "--out", str(empty), "--workers", "1"]) == 0
    assert skein(["plan", str(campaign), "--out", str(empty), "--workers", "1"]) == 0  # its own


def test_skein_run_with_failed_consumers_says_so_and_exits_4(tmp_path, monkeypatch, capsys):
    campaign = make_world(tmp_path, monkeypatch, {"growth": {"a.sql": READER, "b.sql": READER}})
    repo = tmp_path / "repos" / "growth"
    (repo / "a.sql").write_text("-- work in progress\n" + READER)

    # a threshold no failure passes (rate > 100%): the run finishes, with a failed consumer
    assert skein(["run", str(campaign), "--approve", "all", "--error-threshold", "1",
                  "--no-soak", "--workers", "1"]) == 4
    out = capsys.readouterr().out
    assert ": finished, but 1 consumer(s) FAILED and are not migrated." in out
    assert "1 consumer(s) failed to apply or failed monitoring." in out
    code, outcome = run_json(capsys, str(campaign), "--approve", "all", "--error-threshold", "1")
    assert code == 4 and outcome["failed"] == 1 and outcome["status"] == "finished"
    assert "4 finished but some consumers failed" in " ".join(
        subprocess.run([sys.executable, "-m", "skein.cli", "run", "--help"], capture_output=True,
                       text=True, check=True).stdout.split())


# --- the run-directory names themselves ------------------------------------------------------

@pytest.mark.parametrize("cid", ["growth/x/y.sql", "growth__x/y.sql", "a_/b", "a/_b", "a//b",
                                 "_/_", "%41/b", "r/[ab] *?.sql", "r/caf\u00e9.sql", "r/\udce9.sql",
                                 "r/tab\tand\nnewline.sql", "r/" + "d/" * 150 + "x.sql"])
def test_file_names_are_distinct_and_map_back(cid):
    name = file_name(cid)
    assert "/" not in name and name not in ("", ".", "..")
    assert len(name.encode("utf-8", "surrogateescape")) <= 255 - len(".retry.json")
    if "%%" not in name:
        assert consumer_id(name) == cid
    else:  # shortened: distinct by its hash, and the id is in the file it names
        assert file_name(cid[:-5] + "y.sql") != name


# --- a repository's own programs: hooks and fsmonitor never run inside Skein's git ----------

HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "pre-merge-commit",
         "post-merge", "post-checkout", "reference-transaction", "post-index-change")


def test_a_repositorys_hooks_and_fsmonitor_never_run(tmp_path, monkeypatch, capsys):
    """A consumer repository is another team's: its .git/hooks and its fsmonitor program are
    code. Skein's commits and merges (and discovery's and the portal's git reads) run none."""
    campaign = make_world(tmp_path, monkeypatch, {"growth": {"a.sql": READER}})
    repo = tmp_path / "repos" / "growth"
    ran = tmp_path / "ran"
    for hook in HOOKS:
        script = repo / ".git" / "hooks" / hook
        script.write_text(f"#!/bin/sh\necho {hook} >> {ran}\n")
        script.chmod(0o755)
    monitor = tmp_path / "fsmonitor.sh"
    monitor.write_text(f"#!/bin/sh\necho fsmonitor >> {ran}\n")
    monitor.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(monitor))

    code, outcome = run_json(capsys, str(campaign), "--approve", "all")

    assert code == 0 and outcome["applied"] == 1, outcome
    assert "analytics_v2.plays" in (repo / "a.sql").read_text()
    assert merges(repo) == 1
    assert not ran.exists(), f"ran: {ran.read_text()}"
