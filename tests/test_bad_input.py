"""Hostile and mistaken input, each a defect once found by hand (issue 13), each refused with
a message naming the file, line and field, with nothing lost or half-applied.

Every test builds a small real world of its own: a DuckDB warehouse, a git repository of
consumers and a campaign file, under ``tmp_path``; runs go through ``skein``'s own entry point.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import GIT_ENV, make_git_repo
from skein.approvals import OPTION_OF_SCOPE
from skein.cli import build_parser
from skein.cli import main as skein
from test_spec import GOOD

# test_spec's campaign, its repositories only (the lines the messages below name are the same)
CAMPAIGN = GOOD.replace("  - warehouse_views: true\n", "")
READER = "SELECT user_id, ms_played FROM analytics.plays\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          env={**os.environ, **GIT_ENV}).stdout.decode()


@pytest.fixture
def world(tmp_path, monkeypatch) -> Path:
    """The campaign file of a one-repository world; ``SKEIN_HOME`` is the test's own."""
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2")
    con.execute("CREATE TABLE analytics.plays AS SELECT i AS user_id, i * 1000 AS ms_played, "
                "false AS legacy_flag FROM range(50) t(i)")
    con.execute("CREATE TABLE analytics_v2.plays AS SELECT i AS account_id, i AS duration_s "
                "FROM range(50) t(i)")
    con.close()
    make_git_repo(tmp_path / "repos" / "growth", {"a.sql": READER, "b.sql": READER})
    monkeypatch.setenv("SKEIN_HOME", str(tmp_path / "home"))
    campaign = tmp_path / "c.yaml"
    campaign.write_text(CAMPAIGN)
    return campaign


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code = skein(["run", *args, "--no-soak", "--json", "--workers", "1"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else {}


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


# --- 1. symlinks leaving their repository are neither read nor written ----------------------

def test_symlinked_consumers_are_neither_read_nor_written(world, tmp_path, capsys):
    growth = world.parent / "repos" / "growth"
    # another repository, outside the campaign's globs, and a plain file outside any repo
    other = make_git_repo(tmp_path / "elsewhere" / "finance", {"q.sql": READER})
    plain = tmp_path / "outside" / "plain.sql"
    plain.parent.mkdir()
    plain.write_text(READER)
    os.symlink(other / "q.sql", growth / "into_other_repo.sql")
    os.symlink(plain, growth / "to_plain_file.sql")
    os.symlink("/etc/passwd", growth / "passwd.sql")
    os.symlink(other, growth / "linked_dir")
    commit_all(growth, "symlinks")
    other_head = git(other, "rev-parse", "HEAD")

    code, outcome = run_json(capsys, str(world), "--approve", "all")

    assert code == 0 and outcome["applied"] == 2  # a.sql and b.sql, nothing else
    assert git(other, "rev-parse", "HEAD") == other_head
    assert git(other, "branch", "--list") == "* main\n"
    assert not (other / ".git" / "skein.lock").exists()
    assert not (plain.parent / ".git").exists() and not (tmp_path / ".git").exists()
    assert plain.read_text() == READER and (other / "q.sql").read_text() == READER
    catalog = pickle.loads(next((tmp_path / "home" / "runs").rglob("catalog.pkl")).read_bytes())
    assert sorted(c.id for c in catalog.consumers) == ["growth/a.sql", "growth/b.sql"]
    assert "root:" not in json.dumps([c.sql for c in catalog.consumers])
    problems = "\n".join(catalog.problems)
    for name in ("into_other_repo.sql", "to_plain_file.sql", "passwd.sql"):
        assert f"growth/{name}: {name} is a symlink to " in problems


def test_the_git_applier_refuses_to_write_through_a_symlink(tmp_path):
    from skein.apply import ApplyError, GitApplier, Target

    outside = tmp_path / "outside.sql"
    outside.write_text(READER)
    repo = make_git_repo(tmp_path / "r", {"x.sql": READER})
    os.symlink(outside, repo / "link.sql")
    commit_all(repo, "a link")
    target = Target(consumer="r/link.sql", kind="file", campaign="c", repo=repo, path="link.sql")
    with pytest.raises(ApplyError, match="link.sql is a symlink to .*not written through"):
        GitApplier().write(target, b"SELECT 2\n", "m")
    assert outside.read_text() == READER and git(repo, "log", "--format=%s") == "a link\ninit\n"


# --- 3. bounded memory: YAML bombs, huge campaign files, huge consumers --------------------

def yaml_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_a_ten_level_yaml_bomb_is_refused_in_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(yaml_bomb(10))
    assert bomb.stat().st_size < 1024
    # a child process, so its peak memory is the bomb's alone (VmHWM: ru_maxrss would carry
    # the forking pytest worker's peak across exec)
    probe = ("import re\nfrom pathlib import Path\nfrom skein.cli import main\n"
             f"code = main(['validate', '--offline', {str(bomb)!r}])\n"
             "print(code, re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code, peak_kb = map(int, done.stdout.split()[-2:])
    assert code == 2
    assert f"{bomb}:1: more than 100,000 values (YAML aliases expanding?)" in done.stderr
    assert peak_kb < 400 * 1024  # an interpreter with sqlglot is ~150 MB; the bomb would be GBs


def test_a_huge_campaign_file_is_refused_before_it_is_parsed(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    big.write_text(CAMPAIGN + "# " + "x" * (2 << 20) + "\n")
    assert skein(["validate", "--offline", str(big)]) == 2
    assert f"{big}:1: file is 2.1 MB, more than a campaign file can be (1 MiB)" in capsys.readouterr().err


def test_a_huge_consumer_is_escalated_as_too_large(world, tmp_path, capsys):
    growth = world.parent / "repos" / "growth"
    (growth / "huge.sql").write_text(READER + "UNION ALL SELECT 1, 2\n" * 60_000)  # ~1.3 MB
    commit_all(growth, "a generated query")
    assert skein(["plan", str(world), "--out", str(tmp_path / "plan"), "--workers", "1"]) == 3
    items = {i["id"]: i for i in json.loads((tmp_path / "plan" / "plan.json").read_text())["items"]}
    assert items["growth/huge.sql"]["status"] == "escalated"
    assert "too large to analyse: 1.3 MB (limit 1 MiB)" in items["growth/huge.sql"]["reason"]
    assert items["growth/a.sql"]["status"] == "patched"


# --- 4 and 5. not UTF-8, unwritable outputs --------------------------------------------------

def test_a_campaign_file_that_is_not_utf8_names_its_line(tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(CAMPAIGN.replace("Move plays", "Déplacer").encode("latin-1"))
    assert skein(["validate", "--offline", str(bad)]) == 2
    assert f"{bad}:2: not UTF-8 text (byte 0xe9): save the file as UTF-8" in capsys.readouterr().err


def test_a_latin1_consumer_of_the_source_is_escalated_with_the_reason(world, tmp_path, capsys):
    growth = world.parent / "repos" / "growth"
    (growth / "latin1.sql").write_bytes("-- durée\nSELECT user_id FROM analytics.plays\n".encode("latin-1"))
    commit_all(growth, "a Latin-1 file")
    assert skein(["plan", str(world), "--out", str(tmp_path / "plan"), "--workers", "1"]) == 3
    items = {i["id"]: i for i in json.loads((tmp_path / "plan" / "plan.json").read_text())["items"]}
    assert items["growth/latin1.sql"]["status"] == "escalated"
    assert "not UTF-8 text (byte 0xe9 on line 1)" in items["growth/latin1.sql"]["reason"]
    assert "growth/latin1.sql" in capsys.readouterr().out  # listed among the escalations

    assert skein(["rewrite", str(world), str(growth / "latin1.sql")]) == 2
    assert f"{growth / 'latin1.sql'}:1: not UTF-8 text (byte 0xe9)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["plan", "schema"])
def test_out_paths_that_cannot_be_written_are_user_errors(world, tmp_path, capsys, command):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    args = [command, str(world)] if command == "plan" else [command]
    if command == "plan":  # a file where the folder should be
        assert skein([*args, "--out", str(afile)]) == 2
        assert f"--out {afile}: is a file, not a folder" in capsys.readouterr().err
    assert skein([*args, "--out", str(afile / "below")]) == 2
    assert f"--out {afile / 'below'}: cannot " in capsys.readouterr().err
    assert afile.read_text() == "keep me\n"


# --- 6. validation passes only what works later ---------------------------------------------

@pytest.mark.parametrize("expression, says", [
    ("account_id; DROP TABLE analytics.plays --", "must be one SQL expression, not 2 statements"),
    ("account_id -- x", "holds a comment"),
    ("account_id /* why */", "holds a comment"),
])
def test_column_expressions_are_single_and_comment_free(tmp_path, capsys, expression, says):
    campaign = tmp_path / "c.yaml"
    campaign.write_text(CAMPAIGN.replace("user_id: account_id", f"user_id: {json.dumps(expression)}"))
    assert skein(["validate", "--offline", str(campaign)]) == 2
    assert f"{campaign}:8: columns.user_id: expression {expression!r} {says}" in capsys.readouterr().err


def test_a_repository_glob_matching_nothing_fails_validate(world, capsys):
    world.write_text(CAMPAIGN.replace("repos/*", "nowhere/*"))
    assert skein(["validate", "--offline", str(world)]) == 2
    assert f"{world}:12: consumers[0].repo: no git repository matches 'nowhere/*'" in capsys.readouterr().err


@pytest.mark.parametrize("make, says", [
    (lambda p: p.mkdir(), "is a folder, not a DuckDB file"),
    (lambda p: p.write_text("user_id,ms_played\n1,2\n"), "is not a DuckDB database file"),
])
def test_a_warehouse_that_is_not_a_database_names_the_field(world, capsys, make, says):
    (world.parent / "wh.duckdb").unlink()
    make(world.parent / "wh.duckdb")
    assert skein(["validate", str(world)]) == 2
    assert f"{world}:4: warehouse: warehouse 'duckdb:///wh.duckdb': " in (err := capsys.readouterr().err)
    assert says in err


# --- 7. run ids cannot lead out of the run folder --------------------------------------------

@pytest.mark.parametrize("run_id", ["..", ".", ""])
def test_run_ids_that_are_not_folder_names_are_refused(world, tmp_path, capsys, run_id):
    assert skein(["run", str(world), "--run-id", run_id, "--approve", "none"]) == 2
    assert f"run id {run_id!r} cannot name a folder" in capsys.readouterr().err
    assert not list((tmp_path / "home").rglob("campaign.yaml"))


# --- 8. the demo command never deletes work it did not make ----------------------------------

def test_demo_fleet_refuses_to_delete_the_users_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert skein(["demo-fleet", "--out", str(out), "--consumers", "12"]) == 0
    assert skein(["demo-fleet", "--out", str(out), "--consumers", "12"]) == 0  # untouched: rebuilt
    mine = out / "campaigns" / "mine.yaml"
    mine.write_text("campaign: mine\n")
    edited = sorted((out / "repos").rglob("*.sql"))[0]
    repo = out / "repos" / edited.relative_to(out / "repos").parts[0]
    edited.write_text("-- my edit\n" + edited.read_text())
    capsys.readouterr()

    assert skein(["demo-fleet", "--out", str(out), "--consumers", "12"]) == 2
    err = capsys.readouterr().err
    assert "holds work the demo did not make" in err
    assert "campaigns/mine.yaml: added since the demo was built" in err
    assert f"repos/{repo.name}: uncommitted changes" in err and "--replace" in err
    assert mine.exists() and edited.read_text().startswith("-- my edit\n")

    assert skein(["demo-fleet", "--out", str(out), "--consumers", "12", "--replace"]) == 0
    assert not mine.exists()


# --- 9. messages that say what happened ------------------------------------------------------

def test_a_repository_removed_mid_run_is_said_so_and_not_recreated(world, capsys):
    from skein.pipeline import apply_wave, discover, record_decision, rewrite_consumers, start_run
    from skein.pipeline import simulate_consumers, summarize

    ctx = start_run(world, "r1")
    ids = discover(ctx, workers=1)
    rewrite_consumers(ctx, ids)
    simulate_consumers(ctx, ids)
    summarize(ctx)
    record_decision(ctx, OPTION_OF_SCOPE["all"])
    growth = world.parent / "repos" / "growth"
    subprocess.run(["rm", "-rf", str(growth)], check=True)

    applied = apply_wave(ctx, "everyone", ["growth/a.sql"])

    assert "the repository" in applied.failed["growth/a.sql"]
    assert "is gone (removed or moved since the campaign was planned)" in applied.failed["growth/a.sql"]
    assert not growth.exists()


def test_an_uncommitted_edit_is_named_as_such(world, capsys):
    growth = world.parent / "repos" / "growth"
    (growth / "a.sql").write_text("-- work in progress\n" + READER)
    code, outcome = run_json(capsys, str(world), "--approve", "all")
    assert outcome["failed"] == 1
    audit = subprocess.run([sys.executable, "-m", "skein.cli", "audit", "plays-v2", "--json"],
                           capture_output=True, text=True, check=True).stdout
    failed = [e for e in json.loads(audit) if e["action"] == "apply_failed"]
    message = failed[0]["detail"]["message"]
    assert "a.sql has uncommitted changes in" in message and "commit or stash them" in message
    assert "changed since it was planned" not in message
    assert (growth / "a.sql").read_text().startswith("-- work in progress\n")


def test_a_rerun_approved_after_a_rejection_reports_finished(world, capsys):
    code, outcome = run_json(capsys, str(world), "--run-id", "r1", "--approve", "none")
    assert code == 5 and outcome["status"] == "rejected"
    code, outcome = run_json(capsys, str(world), "--run-id", "r1", "--approve", "all")
    assert code == 0 and outcome["status"] == "finished" and outcome["applied"] == 2


# --- 10. the command line explains itself ----------------------------------------------------

def test_version_and_help_for_every_argument(capsys):
    from skein import __version__

    with pytest.raises(SystemExit) as done:
        skein(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"skein {__version__}\n"
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    unexplained = [f"{name} {action.dest}" for name, parser in sub.choices.items()
                   for action in parser._actions if not action.help and action.dest != "help"]
    assert unexplained == []


def test_sqlglot_warnings_do_not_reach_the_terminal(world, capsys):
    growth = world.parent / "repos" / "growth"
    (growth / "c.sql").write_text("VACUUM ANALYZE analytics.plays;\n" + READER)
    commit_all(growth, "a maintenance statement")
    skein(["discover", str(world)])
    err = capsys.readouterr().err
    assert "Falling back to parsing as a 'Command'" not in err and "VACUUM" not in err


def test_deeply_nested_sql_is_escalated_not_a_crash(world, tmp_path):
    growth = world.parent / "repos" / "growth"
    (growth / "deep.sql").write_text("SELECT " + "(" * 2000 + "user_id" + ")" * 2000
                                     + " FROM analytics.plays\n")
    commit_all(growth, "generated nesting")
    assert skein(["plan", str(world), "--out", str(tmp_path / "plan"), "--workers", "1"]) == 3
    items = {i["id"]: i for i in json.loads((tmp_path / "plan" / "plan.json").read_text())["items"]}
    assert items["growth/deep.sql"]["status"] == "escalated"
    assert "does not parse: nested too deeply" in items["growth/deep.sql"]["reason"]
    assert items["growth/a.sql"]["status"] == items["growth/b.sql"]["status"] == "patched"
