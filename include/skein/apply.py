"""Putting a verified patch where the consumer lives, and putting the old bytes back.

Two places today: files in git repositories (a commit on the campaign branch, merged into the
repository's default branch) and views in the warehouse (replaced in a transaction). Both sit
behind ``Applier`` so another mode (e.g. GitHub pull requests through the GitHub provider) is
one more class: it gets the same target, the new bytes and a message, and must report the
content it replaced.

Appliers only move bytes; idempotency, hashes and the audit trail are ``skein.waves``' job.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

from skein.errors import SkeinError
from skein.faults import crash_point
from skein.paths import GIT_NO_REPO_PROGRAMS, symlink_on_path


class ApplyError(SkeinError):
    """A patch could not be applied or restored; nothing was changed."""


@dataclass(frozen=True)
class Target:
    """Where one consumer's code lives."""

    consumer: str
    kind: str  # file | view
    campaign: str
    repo: Path | None = None  # file: the repository's work tree
    path: str | None = None  # file: path inside the repository
    view: str | None = None  # view: schema.name
    warehouse: str | None = None  # view: the campaign's warehouse URL
    base_dir: Path | None = None  # where a relative DuckDB path is resolved


class Applier(Protocol):
    def current(self, target: Target) -> bytes | None:
        """The consumer's code as it is now (``None``: it does not exist)."""

    def write(self, target: Target, content: bytes, message: str, expected: str | None = None) -> bytes:
        """Make ``content`` the consumer's code; returns the code as stored afterwards.
        ``expected``: the SHA-256 the current code must still have, checked under the same
        lock as the write (another campaign may have changed it since it was read)."""

    def refusal(self, target: Target) -> str | None:
        """Why the consumer cannot be written now in a way its owner would have to know
        (uncommitted edits, a symlink), or None. Asked before hashes are compared, so the
        message names the cause rather than a hash mismatch."""


def _check_unchanged(target: Target, current: bytes | None, expected: str | None) -> None:
    import hashlib

    if expected is None:
        return
    now = None if current is None else hashlib.sha256(current).hexdigest()
    if now != expected:
        raise ApplyError(f"{target.consumer} changed meanwhile (hash {str(now)[:12]}, expected "
                         f"{expected[:12]}): not written")


def applier_for(target: Target) -> Applier:
    if target.kind == "file":
        return GitApplier()
    if target.kind == "view":
        return ViewApplier()
    raise ApplyError(f"{target.consumer}: no applier for {target.kind!r} consumers")


class GitApplier:
    """One commit per consumer on ``skein/<campaign>``, merged (``--no-ff``) into the checked-out
    default branch, so ``git log`` shows the campaign's merges and each is revertable.

    The branch commit is built with plumbing (a private index file) so the work tree never
    switches branches; only the merge touches it, and ``git merge`` refuses to overwrite
    uncommitted changes, which is the safety we want.
    """

    def __init__(self, branch_prefix: str = "skein/"):
        self.branch_prefix = branch_prefix
        self.last_commit: str | None = None  # the merge the last write made (for the audit)

    def current(self, target: Target) -> bytes | None:
        with _repo_lock(target):
            return self._committed(target)

    def refusal(self, target: Target) -> str | None:
        with _repo_lock(target):
            return self.refusal_locked(target)

    @staticmethod
    def refusal_locked(target: Target) -> str | None:
        link = symlink_on_path(target.repo, target.path)
        if link is not None:  # writing through it would change a file outside the repo
            return f"{target.consumer}: {link}: not written through"
        if _git(target.repo, "status", "--porcelain", "--", target.path).strip():
            return (f"{target.consumer}: {target.path} has uncommitted changes in "
                    f"{target.repo}: commit or stash them, then run the campaign again")
        return None

    def write(self, target: Target, content: bytes, message: str, expected: str | None = None) -> bytes:
        repo, path = target.repo, target.path
        with _repo_lock(target):
            _recover(repo)
            refused = self.refusal_locked(target)
            if refused:
                raise ApplyError(refused)
            _check_unchanged(target, self._committed(target), expected)
            if (repo / ".git" / "index.lock").exists():
                raise ApplyError(f"{target.consumer}: {repo}/.git/index.lock exists: another git "
                                 "command is running there (or was killed: remove the lock)")
            head = _git(repo, "symbolic-ref", "--quiet", "--short", "HEAD").strip()
            if not head:
                raise ApplyError(f"{target.consumer}: {repo} has a detached HEAD")
            campaign_branch = f"{self.branch_prefix}{target.campaign}"
            base = _git(repo, "rev-parse", "HEAD").strip()
            # As `git add` stores it: the path's .gitattributes (eol, ident) clean the text
            blob = _git(repo, "hash-object", "-w", "--stdin", f"--path={path}", input=content).strip()
            mode = self._mode(repo, path)
            with tempfile.TemporaryDirectory() as tmp:
                env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
                _git(repo, "read-tree", base, env=env)
                _git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", env=env)
                tree = _git(repo, "write-tree", env=env).strip()
            commit = _git(repo, "commit-tree", tree, "-p", base, "-m", message).strip()
            _git(repo, "update-ref", f"refs/heads/{campaign_branch}", commit)
            crash_point("git:after_commit")
            marker = repo / ".git" / MERGING_MARKER
            marker.write_text(str(os.getpid()))
            try:
                _git(repo, "merge", "--no-ff", "--no-edit", "-m",
                     _merge_message(message, campaign_branch), campaign_branch)
            finally:  # a merge that failed cleanly leaves nothing to recover
                marker.unlink()
            crash_point("git:after_merge")
            self.last_commit = _git(repo, "rev-parse", "HEAD").strip()
            return self._committed(target)

    def stored_form(self, target: Target, content: bytes) -> bytes:
        """``content`` as the work tree holds it once committed: cleaned and checked out again
        through the path's .gitattributes (CRLF, ``$Id$`` of the new blob), so a write found
        done after a crash is recognised by its hash."""
        with _repo_lock(target):
            blob = _git(target.repo, "hash-object", "-w", "--stdin", f"--path={target.path}",
                        input=content).strip()
            return _git_bytes(target.repo, "cat-file", "--filters", f"--path={target.path}", blob)

    def _committed(self, target: Target) -> bytes | None:
        """The committed file as a checkout writes it (``--filters``: .gitattributes' eol and
        ident applied), which is what discovery and the agents read from the work tree: with
        the raw blob, a CRLF or ``$Id$`` file never matched its planned hash."""
        try:
            return _git_bytes(target.repo, "cat-file", "--filters", f"HEAD:{target.path}")
        except ApplyError:
            return None

    @staticmethod
    def _mode(repo: Path, path: str) -> str:
        listed = _git(repo, "ls-files", "--stage", "--", path).split()
        return listed[0] if listed else "100644"


MERGING_MARKER = "skein-merging"  # holds the pid of the Skein process inside `git merge`


def _recover(repo: Path) -> None:
    """Undo a merge a killed Skein task left half done (its ``index.lock``, ``MERGE_HEAD``).

    Only when the marker written just before Skein's ``git merge`` names a process that no
    longer exists: a merge a person has in progress, or a live git command, is never touched.
    """
    git_dir = repo / ".git"
    marker = git_dir / MERGING_MARKER
    if not marker.exists():
        return
    try:
        pid = int(marker.read_text().strip() or 0)
        os.kill(pid, 0)
        return  # still running (another Skein process cannot be: we hold the repo lock)
    except (ValueError, ProcessLookupError):
        pass
    except PermissionError:
        return
    (git_dir / "index.lock").unlink(missing_ok=True)
    if (git_dir / "MERGE_HEAD").exists():
        _git(repo, "merge", "--abort")
    marker.unlink()


def _merge_message(message: str, branch: str) -> str:
    subject, _, body = message.partition("\n")
    return f"Merge {branch}: {subject}\n{body}".rstrip() + "\n"


class ViewApplier:
    """``CREATE OR REPLACE VIEW`` in one transaction; the content is the view's DDL.

    The DDL read back is the engine's own rendering (DuckDB and PostgreSQL normalise view
    SQL), which is what the hashes are taken of: restoring the old DDL gives back the exact
    old rendering.
    """

    def current(self, target: Target) -> bytes | None:
        with self._session(target) as (conn, dialect):
            return _view_ddl(conn, dialect, target.view)

    def refusal(self, target: Target) -> str | None:
        return None  # the view's DDL is all there is: ``expected`` covers any change

    def write(self, target: Target, content: bytes, message: str, expected: str | None = None) -> bytes:
        from skein.view_comments import read_comment, restore_comment

        statement = _replace_view_statement(content.decode("utf-8"), target)
        with self._session(target, write=True) as (conn, dialect):
            _check_unchanged(target, _view_ddl(conn, dialect, target.view), expected)
            try:
                # The comment (owner, tier) is not part of the DDL: DuckDB's replace drops it,
                # so it is put back in the same transaction, on apply and on rollback alike.
                kept = read_comment(conn, dialect, target.view)
                if dialect == "duckdb":
                    conn.execute("BEGIN TRANSACTION")
                    conn.execute(statement)
                    restore_comment(conn, dialect, kept)
                    crash_point("view:in_transaction")
                    conn.execute("COMMIT")
                else:
                    with conn.cursor() as cur:
                        cur.execute(statement)
                    restore_comment(conn, dialect, kept)
                    crash_point("view:in_transaction")
                    conn.commit()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    conn.rollback() if dialect != "duckdb" else conn.execute("ROLLBACK")
                raise ApplyError(f"{target.consumer}: cannot replace view {target.view}: "
                                 f"{str(exc).splitlines()[0]}") from None
            return _view_ddl(conn, dialect, target.view)

    @contextlib.contextmanager
    def _session(self, target: Target, write: bool = False):
        url = target.warehouse or ""
        if url.startswith("duckdb://"):
            import duckdb

            from skein.warehouse import LOCKED_DOWN, duckdb_file

            file = duckdb_file(url, target.base_dir)
            # Replacing a view binds its SQL, and binding a table function reads: the view's
            # SQL is consumer text, so this connection is locked down like the sandbox's.
            # DuckDB lets one process write a file, or many read it: writers take turns here
            # and wait for readers to let go, instead of failing on the file lock.
            with _file_lock(Path(str(file) + ".skein-lock")):
                conn = _retry_open(lambda: duckdb.connect(str(file), read_only=not write,
                                                          config=LOCKED_DOWN))
                try:
                    yield conn, "duckdb"
                finally:
                    conn.close()
        elif url.startswith(("postgresql://", "postgres://")):
            import psycopg

            conn = psycopg.connect(url, connect_timeout=10)
            try:
                yield conn, "postgres"
            finally:
                conn.close()
        else:
            raise ApplyError(f"{target.consumer}: views are applied in DuckDB or PostgreSQL, "
                             f"not {url.split(':', 1)[0]!r}")


_CREATE_VIEW = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\b", re.IGNORECASE)


def _replace_view_statement(ddl: str, target: Target) -> str:
    """The consumer's ``CREATE VIEW`` as ``CREATE OR REPLACE VIEW`` (the same name, quoted).

    >>> _replace_view_statement("CREATE VIEW a.v AS SELECT date_trunc('month', d) FROM t;",
    ...                         Target("c", "view", "demo", view="a.v", warehouse="duckdb:///w.duckdb"))
    "CREATE OR REPLACE VIEW a.v AS SELECT date_trunc('month', d) FROM t;"
    """
    import sqlglot
    from sqlglot import exp

    dialect = "postgres" if (target.warehouse or "").startswith("postgres") else "duckdb"
    try:
        statements = [s for s in sqlglot.parse(ddl, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise ApplyError(f"{target.consumer}: the view's new DDL does not parse: "
                         f"{str(exc).splitlines()[0]}") from None
    create = statements[0] if len(statements) == 1 else None
    if not isinstance(create, exp.Create) or create.kind != "VIEW":
        raise ApplyError(f"{target.consumer}: expected one CREATE VIEW statement")
    name = create.this.this if isinstance(create.this, exp.Schema) else create.this
    if ".".join(p.name for p in name.parts).lower() != (target.view or "").lower():
        raise ApplyError(f"{target.consumer}: the DDL creates {name.sql(dialect)}, not {target.view}")
    # The DDL runs as written, only CREATE becoming CREATE OR REPLACE: regenerating it with
    # sqlglot would not give the engine back its own text (e.g. 'month' -> 'MONTH'), and a
    # rollback must restore the exact previous bytes.
    replaced, count = _CREATE_VIEW.subn("CREATE OR REPLACE VIEW", ddl.strip(), count=1)
    if not count:
        raise ApplyError(f"{target.consumer}: the DDL does not start with CREATE VIEW")
    return replaced


def _view_ddl(conn, dialect: str, view: str) -> bytes | None:
    schema, _, name = view.rpartition(".")
    if dialect == "duckdb":
        row = conn.execute("SELECT sql FROM duckdb_views() WHERE NOT internal AND "
                           "lower(schema_name) = lower(?) AND lower(view_name) = lower(?)",
                           [schema or "main", name]).fetchone()
        return None if row is None else row[0].encode("utf-8")
    with conn.cursor() as cur:
        cur.execute("SELECT schemaname, viewname, definition FROM pg_views "
                    "WHERE lower(schemaname) = lower(%s) AND lower(viewname) = lower(%s)",
                    (schema or "public", name))
        row = cur.fetchone()
    if row is None:
        return None
    from skein.warehouse import postgres_view_ddl

    return postgres_view_ddl(row[0], row[1], row[2]).encode("utf-8")


def _retry_open(connect, attempts: int = 60, delay_s: float = 0.5):
    import duckdb

    for attempt in range(attempts):
        try:
            return connect()
        except duckdb.IOException as exc:  # another process holds the file
            if "lock" not in str(exc).lower() or attempt == attempts - 1:
                raise ApplyError(f"cannot open the warehouse: {str(exc).splitlines()[0]}") from None
            time.sleep(delay_s)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _repo_lock(target: Target):
    """Mapped tasks applying consumers of the same repository run in parallel processes:
    git's own index.lock would make all but one fail, so they queue here instead."""
    git_dir = target.repo / ".git"
    if git_dir.is_file():  # a linked worktree: ``.git`` names the real git dir
        git_dir = Path(_git(target.repo, "rev-parse", "--absolute-git-dir").strip())
    if not git_dir.is_dir():  # never recreate a repository someone removed
        raise ApplyError(f"{target.consumer}: the repository {target.repo} is gone (removed or "
                         "moved since the campaign was planned): nothing written")
    return _file_lock(git_dir / "skein.lock")


def _git(repo: Path, *args: str, input: bytes | None = None, env: dict | None = None) -> str:
    return _git_bytes(repo, *args, input=input, env=env).decode("utf-8", "replace")


def _git_bytes(repo: Path, *args: str, input: bytes | None = None, env: dict | None = None) -> bytes:
    # Literal pathspecs: a file named `[ab].sql` or `*.sql` is that file, not a pattern.
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_LITERAL_PATHSPECS": "1", **(env or {})}
    full_env.setdefault("GIT_AUTHOR_NAME", "Skein")
    full_env.setdefault("GIT_AUTHOR_EMAIL", "skein@localhost")
    full_env.setdefault("GIT_COMMITTER_NAME", "Skein")
    full_env.setdefault("GIT_COMMITTER_EMAIL", "skein@localhost")
    result = subprocess.run(["git", *GIT_NO_REPO_PROGRAMS, "-C", str(repo), *args], input=input,
                            capture_output=True, env=full_env, check=False)
    if result.returncode != 0 and not (args[:2] == ("symbolic-ref", "--quiet")):
        raise ApplyError(f"git {' '.join(args[:2])} in {repo} failed: "
                         f"{result.stderr.decode('utf-8', 'replace').strip()}")
    return result.stdout
