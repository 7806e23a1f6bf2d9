"""Appliers (``skein.apply``): real git repositories, a real DuckDB file, a real PostgreSQL
database (created for the test, dropped afterwards)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import duckdb
import pytest

from conftest import GIT_ENV, make_git_repo
from skein.apply import ApplyError, GitApplier, Target, ViewApplier, applier_for

SERVER = os.environ.get("SKEIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")

OLD = b"-- daily minutes\nSELECT user_id, sum(ms_played) / 60000.0 AS minutes\nFROM analytics.plays\nGROUP BY user_id\n"
NEW = (b"-- daily minutes\r\nSELECT account_id AS user_id, sum(CAST(duration_s * 1000 AS BIGINT)) / 60000.0"
       b" AS minutes\r\nFROM analytics_v2.plays\r\nGROUP BY account_id  -- caf\xc3\xa9, no newline at the end")
MESSAGE = ("skein(plays-v2): reports/minutes.sql reads analytics_v2.plays instead of analytics.plays\n\n"
           "Campaign plays-v2, run r1, wave canary.\nEvidence: /x/evidence/minutes.md\n")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          env={**os.environ, **GIT_ENV}).stdout.decode()


def sha(content: bytes | None) -> str | None:
    return None if content is None else hashlib.sha256(content).hexdigest()


@pytest.fixture
def repo(tmp_path):
    root = make_git_repo(tmp_path / "growth", {
        "reports/minutes.sql": OLD.decode(),
        "reports/other.sql": "SELECT 1\n",
        "README.md": "growth analytics\n",
    })
    (root / "bin").mkdir()
    (root / "bin" / "run.sql").write_bytes(OLD)
    (root / "bin" / "run.sql").chmod(0o755)
    git(root, "add", "bin/run.sql")
    git(root, "commit", "-q", "-m", "an executable script")
    return root


def file_target(repo: Path, path: str = "reports/minutes.sql") -> Target:
    return Target(consumer=f"growth/{path}", kind="file", campaign="plays-v2", repo=repo, path=path)


# --- GitApplier ---------------------------------------------------------------------------

def test_git_write_merges_the_campaign_branch(repo):
    applier, target = GitApplier(), file_target(repo)
    base = git(repo, "rev-parse", "HEAD").strip()
    assert applier.current(target) == OLD

    stored = applier.write(target, NEW, MESSAGE)

    assert stored == NEW
    assert applier.current(target) == NEW
    assert (repo / "reports" / "minutes.sql").read_bytes() == NEW  # the work tree, byte for byte
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main"
    # HEAD is a merge: first parent the old main, second the campaign branch's commit
    parents = git(repo, "log", "-1", "--format=%P").split()
    branch_tip = git(repo, "rev-parse", "refs/heads/skein/plays-v2").strip()
    assert parents == [base, branch_tip]
    assert git(repo, "log", "-1", "--format=%P", branch_tip).split() == [base]
    subject = MESSAGE.splitlines()[0]
    assert git(repo, "log", "-1", "--format=%s").strip() == f"Merge skein/plays-v2: {subject}"
    assert "Campaign plays-v2, run r1, wave canary." in git(repo, "log", "-1", "--format=%b")
    assert git(repo, "log", "-1", "--format=%B", branch_tip) == MESSAGE + "\n"
    merges = git(repo, "log", "--merges", "--format=%s").splitlines()
    assert merges == [f"Merge skein/plays-v2: {subject}"]
    # the branch commit changes exactly that file
    assert git(repo, "diff", "--name-only", base, branch_tip).split() == ["reports/minutes.sql"]
    assert git(repo, "cat-file", "blob", f"{branch_tip}:reports/minutes.sql").encode("utf-8") == NEW


def test_git_writes_to_one_repo_are_separate_merges_and_keep_the_mode(repo):
    applier = GitApplier()
    applier.write(file_target(repo), NEW, MESSAGE)
    applier.write(file_target(repo, "bin/run.sql"), NEW, "skein(plays-v2): bin/run.sql\n")
    assert git(repo, "log", "--merges", "--format=%s").splitlines() == [
        "Merge skein/plays-v2: skein(plays-v2): bin/run.sql", f"Merge skein/plays-v2: {MESSAGE.splitlines()[0]}"]
    assert git(repo, "ls-files", "--stage", "bin/run.sql").split()[0] == "100755"
    assert os.access(repo / "bin" / "run.sql", os.X_OK)
    assert (repo / "bin" / "run.sql").read_bytes() == NEW
    assert (repo / "reports" / "other.sql").read_bytes() == b"SELECT 1\n"
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("how", ["modified", "staged", "deleted"])
def test_git_write_refuses_a_file_with_uncommitted_changes(repo, how):
    applier, target = GitApplier(), file_target(repo)
    path = repo / "reports" / "minutes.sql"
    human = OLD + b"-- a human is editing this\n"
    if how == "deleted":
        path.unlink()
    else:
        path.write_bytes(human)
        if how == "staged":
            git(repo, "add", "reports/minutes.sql")
    head = git(repo, "rev-parse", "HEAD").strip()
    status = git(repo, "status", "--porcelain")
    branches = git(repo, "branch", "--list", "--format=%(refname)")

    with pytest.raises(ApplyError, match="reports/minutes.sql has uncommitted changes"):
        applier.write(target, NEW, MESSAGE)

    assert git(repo, "rev-parse", "HEAD").strip() == head
    assert git(repo, "status", "--porcelain") == status
    assert git(repo, "branch", "--list", "--format=%(refname)") == branches  # no skein/ branch
    if how == "deleted":
        assert not path.exists()
    else:
        assert path.read_bytes() == human
    assert applier.current(target) == OLD


def test_git_write_leaves_other_uncommitted_work_alone(repo):
    (repo / "README.md").write_bytes(b"work in progress\n")
    (repo / "notes.txt").write_bytes(b"untracked\n")
    GitApplier().write(file_target(repo), NEW, MESSAGE)
    assert (repo / "reports" / "minutes.sql").read_bytes() == NEW
    assert (repo / "README.md").read_bytes() == b"work in progress\n"
    assert (repo / "notes.txt").read_bytes() == b"untracked\n"
    assert sorted(git(repo, "status", "--porcelain").splitlines()) == [" M README.md", "?? notes.txt"]


def test_git_write_refuses_a_detached_head(repo):
    git(repo, "checkout", "-q", "--detach")
    head = git(repo, "rev-parse", "HEAD").strip()
    with pytest.raises(ApplyError, match="detached HEAD"):
        GitApplier().write(file_target(repo), NEW, MESSAGE)
    assert git(repo, "rev-parse", "HEAD").strip() == head
    assert (repo / "reports" / "minutes.sql").read_bytes() == OLD


def test_git_restore_gives_back_the_exact_old_bytes(repo):
    applier, target = GitApplier(), file_target(repo)
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    applier.write(target, NEW, MESSAGE)
    assert git(repo, "rev-parse", "HEAD^{tree}").strip() != tree

    restored = applier.write(target, OLD, "skein(plays-v2): roll back reports/minutes.sql\n")

    assert restored == OLD and applier.current(target) == OLD
    assert sha(applier.current(target)) == sha(OLD)
    assert (repo / "reports" / "minutes.sql").read_bytes() == OLD
    assert git(repo, "rev-parse", "HEAD^{tree}").strip() == tree  # the whole tree as before
    assert git(repo, "status", "--porcelain") == ""
    assert len(git(repo, "log", "--merges", "--format=%H").split()) == 2  # both visible, revertable


def test_git_writes_a_new_file(repo):
    target = file_target(repo, "reports/new/added.sql")
    assert GitApplier().current(target) is None
    assert GitApplier().write(target, NEW, MESSAGE) == NEW
    assert (repo / "reports" / "new" / "added.sql").read_bytes() == NEW
    assert git(repo, "status", "--porcelain") == ""


def test_git_write_queues_on_the_repository_lock(repo):
    """Two processes writing two files of the same repository at once both succeed."""
    script = ("import sys; from pathlib import Path; from skein.apply import GitApplier, Target;"
              "GitApplier().write(Target(consumer='c', kind='file', campaign='plays-v2',"
              " repo=Path(sys.argv[1]), path=sys.argv[2]), sys.argv[3].encode(), 'skein: ' + sys.argv[2])")
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", script, str(repo), path, f"SELECT {n}\n"],
                              stderr=subprocess.PIPE)
             for n, path in enumerate(["reports/minutes.sql", "reports/other.sql", "bin/run.sql"])]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert (repo / "reports" / "minutes.sql").read_bytes() == b"SELECT 0\n"
    assert (repo / "reports" / "other.sql").read_bytes() == b"SELECT 1\n"
    assert (repo / "bin" / "run.sql").read_bytes() == b"SELECT 2\n"
    assert len(git(repo, "log", "--merges", "--format=%H").split()) == 3
    assert git(repo, "status", "--porcelain") == ""


# --- ViewApplier ---------------------------------------------------------------------------

DUCKDB_DATA = """
CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2; CREATE SCHEMA analytics_views;
CREATE TABLE analytics.plays AS
SELECT i AS play_id, i % 17 AS user_id, TIMESTAMP '2024-01-01' + INTERVAL (i * 7) HOUR AS played_at,
       (i * 7919) % 300000 AS ms_played, ['SE', 'DE', 'GB'][1 + i % 3] AS country,
       ['tv', 'mobile', 'web'][1 + i % 3] AS device
FROM range(1, 400) t(i);
CREATE TABLE analytics_v2.plays AS
SELECT play_id, user_id AS account_id, played_at, CAST(ms_played / 1000 AS DECIMAL(12, 3)) AS duration_s,
       country AS country_code, device
FROM analytics.plays;
CREATE VIEW analytics_views.v_country_device AS
SELECT country, device, count(*) AS n_plays, sum(ms_played) AS total_ms,
       CAST(played_at AS DATE) AS "day", 'it''s' AS quoted
FROM analytics.plays AS p
WHERE ms_played >= 20000 AND device <> 'speaker'
GROUP BY country, device, CAST(played_at AS DATE)
ORDER BY n_plays DESC;
CREATE VIEW analytics_views.v_rollup AS
SELECT country, sum(n_plays) AS n_plays FROM analytics_views.v_country_device GROUP BY country;
"""

DUCKDB_NEW = """CREATE VIEW analytics_views.v_country_device AS
SELECT country_code AS country, device, count(*) AS n_plays,
       sum(CAST(duration_s * 1000 AS BIGINT)) AS total_ms,
       CAST(played_at AS DATE) AS "day", 'it''s' AS quoted
FROM analytics_v2.plays AS p
WHERE CAST(duration_s * 1000 AS BIGINT) >= 20000 AND device <> 'speaker'
GROUP BY country_code, device, CAST(played_at AS DATE)
ORDER BY n_plays DESC;
"""


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_git_write_recovers_from_a_killed_skein_merge(repo):
    """A Skein task killed inside `git merge` leaves its marker (naming a dead pid) and the
    index lock: the next write cleans both up and goes on."""
    from skein.apply import MERGING_MARKER

    (repo / ".git" / MERGING_MARKER).write_text(str(dead_pid()))
    (repo / ".git" / "index.lock").write_text("")
    target = file_target(repo)
    GitApplier().write(target, b"SELECT 2\n", "skein(plays-v2): second try\n")
    assert (repo / target.path).read_bytes() == b"SELECT 2\n"
    assert not (repo / ".git" / "index.lock").exists()
    assert not (repo / ".git" / MERGING_MARKER).exists()


def test_git_write_never_clears_a_lock_it_did_not_leave(repo):
    """No marker (a person's git command) or a live pid: the lock stays and the write fails."""
    from skein.apply import MERGING_MARKER

    (repo / ".git" / "index.lock").write_text("")
    target = file_target(repo)
    before = (repo / target.path).read_bytes()
    with pytest.raises(ApplyError, match="index.lock"):
        GitApplier().write(target, b"SELECT 2\n", "skein(plays-v2): x\n")
    (repo / ".git" / MERGING_MARKER).write_text(str(os.getpid()))
    with pytest.raises(ApplyError, match="index.lock"):
        GitApplier().write(target, b"SELECT 2\n", "skein(plays-v2): x\n")
    assert (repo / ".git" / "index.lock").exists()
    assert (repo / target.path).read_bytes() == before


@pytest.fixture
def duckdb_warehouse(tmp_path):
    file = tmp_path / "wh" / "warehouse.duckdb"
    file.parent.mkdir()
    con = duckdb.connect(str(file))
    con.execute(DUCKDB_DATA)
    con.close()
    return file


def view_target(warehouse: str, base_dir: Path | None = None, view="analytics_views.v_country_device"):
    return Target(consumer=f"warehouse/{view}", kind="view", campaign="plays-v2", view=view,
                  warehouse=warehouse, base_dir=base_dir)


def duck_rows(file: Path, sql: str):
    con = duckdb.connect(str(file), read_only=True)
    try:
        return sorted(con.execute(sql).fetchall(), key=repr)
    finally:
        con.close()


def test_duckdb_view_replace_and_restore_is_byte_identical(duckdb_warehouse):
    # a relative URL, resolved against base_dir as the campaign file's directory
    target = view_target("duckdb:///wh/warehouse.duckdb", base_dir=duckdb_warehouse.parent.parent)
    applier = applier_for(target)
    assert isinstance(applier, ViewApplier)
    original = applier.current(target)
    assert original.startswith(b"CREATE VIEW analytics_views.v_country_device AS")
    rows_before = duck_rows(duckdb_warehouse, "SELECT * FROM analytics_views.v_country_device")
    rollup_before = duck_rows(duckdb_warehouse, "SELECT * FROM analytics_views.v_rollup")

    stored = applier.write(target, DUCKDB_NEW.encode(), "skein: v_country_device")

    assert stored == applier.current(target)  # what the engine reports, hashed by the run
    assert b"analytics_v2.plays" in stored and b"analytics.plays" not in stored
    assert sha(stored) != sha(original)
    assert duck_rows(duckdb_warehouse, "SELECT * FROM analytics_views.v_country_device") == rows_before
    assert duck_rows(duckdb_warehouse, "SELECT * FROM analytics_views.v_rollup") == rollup_before

    # a second write of the engine's own rendering changes nothing
    assert applier.write(target, stored, "again") == stored

    restored = applier.write(target, original, "skein: roll back v_country_device")

    assert restored == original
    assert applier.current(target) == original
    assert sha(applier.current(target)) == sha(original)
    assert duck_rows(duckdb_warehouse, "SELECT * FROM analytics_views.v_country_device") == rows_before


def test_duckdb_view_restore_keeps_the_engines_own_spelling(duckdb_warehouse):
    """The stored DDL runs as written: regenerating it (sqlglot writes 'month' as 'MONTH')
    would leave a different text, and a rollback whose hash cannot match."""
    with duckdb.connect(str(duckdb_warehouse)) as con:
        con.execute("CREATE VIEW analytics_views.v_monthly AS SELECT date_trunc('month', "
                    "played_at) AS m, count(*) AS n FROM analytics.plays GROUP BY 1")
    target = view_target(f"duckdb:///{duckdb_warehouse}", view="analytics_views.v_monthly")
    applier = ViewApplier()
    original = applier.current(target)
    assert b"'month'" in original
    patched = original.replace(b"analytics.plays", b"analytics_v2.plays")
    applier.write(target, patched, "skein: v_monthly")
    assert applier.write(target, original, "roll back") == original


@pytest.mark.parametrize("ddl,error", [
    ("CREATE VIEW analytics_views.v_other AS SELECT 1 AS x", "creates analytics_views.v_other, not"),
    ("CREATE VIEW v_country_device AS SELECT 1 AS x", "not analytics_views.v_country_device"),
    ("CREATE VIEW analytics_views.v_country_device AS SELECT 1 AS x; DROP TABLE analytics.plays",
     "expected one CREATE VIEW statement"),
    ("CREATE TABLE analytics_views.v_country_device AS SELECT 1 AS x", "expected one CREATE VIEW"),
    ("DROP VIEW analytics_views.v_country_device", "expected one CREATE VIEW"),
    ("CREATE VIEW analytics_views.v_country_device AS SELECT nope FROM analytics_v2.missing",
     "cannot replace view analytics_views.v_country_device"),
])
def test_duckdb_view_refuses_other_statements(duckdb_warehouse, ddl, error):
    target = view_target(f"duckdb:///{duckdb_warehouse}")
    applier = ViewApplier()
    original = applier.current(target)
    with pytest.raises(ApplyError, match=error):
        applier.write(target, ddl.encode(), "skein: nope")
    assert applier.current(target) == original
    assert applier.current(view_target(f"duckdb:///{duckdb_warehouse}", view="analytics_views.v_other")) is None
    assert duck_rows(duckdb_warehouse, "SELECT count(*) FROM analytics.plays") == [(399,)]


def test_duckdb_view_accepts_a_quoted_name(duckdb_warehouse):
    target = view_target(f"duckdb:///{duckdb_warehouse}")
    ddl = DUCKDB_NEW.replace("analytics_views.v_country_device", '"analytics_views"."v_country_device"', 1)
    stored = ViewApplier().write(target, ddl.encode(), "quoted")
    assert b"analytics_v2.plays" in stored


# --- ViewApplier on PostgreSQL ----------------------------------------------------------------

POSTGRES_DATA = """
CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2; CREATE SCHEMA "Reports";
CREATE TABLE analytics.plays (play_id BIGINT PRIMARY KEY, user_id INTEGER, played_at TIMESTAMP,
                              ms_played BIGINT, country TEXT);
INSERT INTO analytics.plays
SELECT i, (i * 7) % 100, TIMESTAMP '2024-01-01' + i * INTERVAL '17 minutes', 1000 * (i % 240),
       (ARRAY['se', 'fr', 'br'])[1 + i % 3]
FROM generate_series(1, 2000) i;
CREATE TABLE analytics_v2.plays AS
SELECT play_id, user_id AS account_id, played_at, CAST(ms_played / 1000.0 AS NUMERIC(12, 3)) AS duration_s,
       country AS country_code
FROM analytics.plays;
CREATE VIEW "Reports"."Recent plays" AS
SELECT p.play_id, p.user_id, p.ms_played, upper(p.country) || '-' || p.user_id::text AS tag,
       count(*) FILTER (WHERE p.ms_played > 60000) OVER (PARTITION BY p.user_id) AS long_plays,
       CASE WHEN p.ms_played >= 120000 THEN 'long' ELSE 'short' END AS kind
FROM analytics.plays AS p
WHERE p.played_at >= '2024-01-15' AND p.country IN ('se', 'fr')
ORDER BY p.play_id;
COMMENT ON VIEW "Reports"."Recent plays" IS 'owner=team-radio tier=2';
"""

POSTGRES_NEW = """CREATE VIEW "Reports"."Recent plays" AS
SELECT p.play_id, p.account_id AS user_id, CAST(p.duration_s * 1000 AS BIGINT) AS ms_played,
       upper(p.country_code) || '-' || p.account_id::text AS tag,
       count(*) FILTER (WHERE CAST(p.duration_s * 1000 AS BIGINT) > 60000) OVER (PARTITION BY p.account_id) AS long_plays,
       CASE WHEN CAST(p.duration_s * 1000 AS BIGINT) >= 120000 THEN 'long' ELSE 'short' END AS kind
FROM analytics_v2.plays AS p
WHERE p.played_at >= '2024-01-15' AND p.country_code IN ('se', 'fr')
ORDER BY p.play_id
"""


@pytest.fixture
def postgres_warehouse():
    psycopg = pytest.importorskip("psycopg")
    name = f"skein_apply_test_{uuid.uuid4().hex}"
    try:
        admin = psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {SERVER} is not reachable ({str(exc).strip()})")
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{SERVER}/{name}"
        with psycopg.connect(url) as con:
            con.execute(POSTGRES_DATA)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def pg_rows(url: str, sql: str):
    import psycopg

    with psycopg.connect(url) as con:
        return con.execute(sql).fetchall()


def test_postgres_view_replace_and_restore_is_byte_identical(postgres_warehouse):
    target = view_target(postgres_warehouse, view="Reports.Recent plays")
    applier = applier_for(target)
    original = applier.current(target)
    assert original.startswith(b'CREATE VIEW "Reports"."Recent plays" AS\n')
    query = 'SELECT * FROM "Reports"."Recent plays" ORDER BY play_id'
    rows_before = pg_rows(postgres_warehouse, query)
    assert rows_before

    stored = applier.write(target, POSTGRES_NEW.encode(), "skein: Recent plays")

    assert stored == applier.current(target)
    assert b"analytics_v2.plays" in stored and b"analytics.plays" not in stored
    assert pg_rows(postgres_warehouse, query) == rows_before

    restored = applier.write(target, original, "skein: roll back Recent plays")

    assert restored == original
    assert sha(applier.current(target)) == sha(original)
    assert pg_rows(postgres_warehouse, query) == rows_before
    # replaced in place: the view's comment (its ownership) is still there
    assert pg_rows(postgres_warehouse, "SELECT obj_description('\"Reports\".\"Recent plays\"'::regclass)") == [
        ("owner=team-radio tier=2",)]


@pytest.mark.parametrize("ddl,error", [
    ('CREATE VIEW "Reports"."Other" AS SELECT 1 AS x', "not Reports.Recent plays"),
    ('CREATE VIEW "Reports"."Recent plays" AS SELECT 1 AS x; DROP TABLE analytics.plays',
     "expected one CREATE VIEW statement"),
    # PostgreSQL cannot drop a view's columns in CREATE OR REPLACE: the transaction rolls back
    ('CREATE VIEW "Reports"."Recent plays" AS SELECT 1 AS play_id', "cannot replace view"),
])
def test_postgres_view_refuses_other_statements(postgres_warehouse, ddl, error):
    target = view_target(postgres_warehouse, view="Reports.Recent plays")
    applier = ViewApplier()
    original = applier.current(target)
    with pytest.raises(ApplyError, match=error):
        applier.write(target, ddl.encode(), "skein: nope")
    assert applier.current(target) == original
    assert applier.current(view_target(postgres_warehouse, view="Reports.Other")) is None
    assert pg_rows(postgres_warehouse, "SELECT count(*) FROM analytics.plays") == [(2000,)]


def test_view_applier_refuses_other_warehouses():
    with pytest.raises(ApplyError, match="views are applied in DuckDB or PostgreSQL, not 'bigquery'"):
        ViewApplier().current(view_target("bigquery://project/dataset"))
    with pytest.raises(ApplyError, match="no applier for 'notebook'"):
        applier_for(Target(consumer="x", kind="notebook", campaign="plays-v2"))


def test_a_write_refuses_content_changed_since_it_was_read(repo, duckdb_warehouse):
    """The hash the caller read is checked again under the write's lock: another campaign's
    write in between is never overwritten."""
    target = file_target(repo)
    applier = GitApplier()
    read = sha(applier.current(target))
    applier.write(target, b"SELECT 'other campaign'\n", "skein(other): first\n")
    with pytest.raises(ApplyError, match="changed meanwhile"):
        applier.write(target, b"SELECT 'mine'\n", "skein(plays-v2): second\n", expected=read)
    assert (repo / target.path).read_bytes() == b"SELECT 'other campaign'\n"

    view = view_target(f"duckdb:///{duckdb_warehouse}")
    views = ViewApplier()
    original = views.current(view)
    with pytest.raises(ApplyError, match="changed meanwhile"):
        views.write(view, DUCKDB_NEW.encode(), "skein", expected=sha(b"something else"))
    assert views.current(view) == original
    assert views.write(view, DUCKDB_NEW.encode(), "skein", expected=sha(original)) != original
