"""The campaign store (``skein.store``) on a real SQLite file and a real PostgreSQL database.

PostgreSQL tests create their own database (``skein_store_test_<hex>``) on the server of
``tests/test_postgres.py`` (``SKEIN_TEST_POSTGRES``, default 127.0.0.1:5432, trust auth) and
drop it afterwards, whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from skein.audit import CONSUMER_STATES, Action
from skein.store import CampaignStore, StoreError, default_store_url, sha256

SERVER = os.environ.get("SKEIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
SKEIN = Path(sys.executable).with_name("skein")


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test, dropped at the end even when it fails."""
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"skein_store_test_{uuid.uuid4().hex}"
    try:
        admin = psycopg2.connect(f"{SERVER}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {SERVER} is not reachable ({str(exc).strip()})")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"{SERVER}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


def _fill(store: CampaignStore) -> None:
    """Two runs of campaign ``demo``, one event of another campaign."""
    old, new = sha256(b"SELECT 1 FROM analytics.plays\n"), sha256(b"SELECT 1 FROM analytics_v2.plays\n")
    store.record("demo", "run-1", "task:discover", "discovered", consumers=3)
    store.record("demo", "run-1", "task:apply_canary", "apply_started", consumer="r/a.sql",
                 wave="canary", before=old, after=new)
    store.record("demo", "run-1", "task:apply_canary", "applied", consumer="r/a.sql",
                 wave="canary", before=old, after=new)
    store.record("demo", "run-1", "task:monitor", "monitored", consumer="r/a.sql", wave="canary",
                 message="6 expectations met")
    store.record("demo", "run-1", "task:apply", "apply_failed", consumer="r/b.sql", wave="everyone",
                 message="r/b.sql changed since it was planned")
    store.record("other", "run-9", "cli", "applied", consumer="r/a.sql")
    store.record("demo", "run-2", "task:rollback", "rolled_back", consumer="r/a.sql",
                 before=old, after=old)
    store.record("demo", "run-2", "user:alice", "approved", message="Approve all", scope="all",
                 when=datetime(2024, 1, 2, tzinfo=UTC))


# --- record, events, consumer states ---------------------------------------------------

def test_record_events_and_consumer_states(store_url):
    store = CampaignStore(store_url)
    try:
        started = datetime.now(UTC) - timedelta(seconds=5)
        first = store.record("demo", "run-0", "cli", "run_started")
        _fill(store)
        events = store.events("demo")
        assert [e.action for e in events] == [
            "run_started", "discovered", "apply_started", "applied", "monitored", "apply_failed",
            "rolled_back", "approved"]
        assert events[0].id == first
        assert [e.id for e in events] == sorted(e.id for e in events)
        assert len({e.id for e in events}) == len(events)
        assert all(e.campaign == "demo" for e in events)
        for e in events:  # timezone-aware UTC on both backends, in recording order
            assert e.at.tzinfo is not None and e.at.utcoffset() == timedelta(0)
            assert started <= e.at <= datetime.now(UTC) + timedelta(seconds=5)
        assert [e.at for e in events] == sorted(e.at for e in events)

        applied = events[3]
        assert (applied.run_id, applied.actor, applied.consumer, applied.wave) == (
            "run-1", "task:apply_canary", "r/a.sql", "canary")
        assert applied.before_hash == hashlib.sha256(b"SELECT 1 FROM analytics.plays\n").hexdigest()
        assert applied.after_hash == hashlib.sha256(b"SELECT 1 FROM analytics_v2.plays\n").hexdigest()
        assert events[1].detail == {"consumers": 3}
        # detail is JSON: values that are not JSON types are kept as their text
        assert events[-1].detail == {"message": "Approve all", "scope": "all",
                                     "when": "2024-01-02 00:00:00+00:00"}
        assert events[0].consumer is None and events[0].before_hash is None

        # filters
        assert [e.action for e in store.events("demo", "run-2")] == ["rolled_back", "approved"]
        assert [e.action for e in store.events("demo", consumer="r/b.sql")] == ["apply_failed"]
        assert [e.action for e in store.events("demo", actions=("applied", "monitored"))] == [
            "applied", "monitored"]
        assert [e.run_id for e in store.events("other")] == ["run-9"]
        assert store.events("nobody") == []

        # consumer state = the last state-changing event; "monitored" only informs
        states = store.consumer_states("demo")
        assert {k: v.action for k, v in states.items()} == {"r/a.sql": "rolled_back",
                                                           "r/b.sql": "apply_failed"}
        run1 = store.consumer_states("demo", "run-1")
        assert {k: v.action for k, v in run1.items()} == {"r/a.sql": "applied",
                                                         "r/b.sql": "apply_failed"}
        assert run1["r/a.sql"].id == applied.id
        assert store.consumer_states("demo", "run-0") == {}
        assert {k: v.action for k, v in store.consumer_states("other").items()} == {"r/a.sql": "applied"}
        assert "monitored" not in CONSUMER_STATES
    finally:
        store.dispose()


def test_store_survives_reopening(store_url):
    """Opening the store again (every task does) keeps the rows and the append-only guard."""
    store = CampaignStore(store_url)
    _fill(store)
    store.dispose()
    again = CampaignStore(store_url)
    try:
        assert len(again.events("demo")) == 7
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with again.engine.begin() as conn:
                conn.exec_driver_sql("UPDATE skein_audit SET action = 'approved'")
        assert again.record("demo", "run-3", "cli", "run_started") > max(e.id for e in again.events("demo")[:-1])
    finally:
        again.dispose()


# --- append-only ---------------------------------------------------------------------------

@pytest.mark.parametrize("statement", [
    "UPDATE skein_audit SET action = 'rejected' WHERE action = 'approved'",
    "UPDATE skein_audit SET after_hash = NULL",
    "DELETE FROM skein_audit WHERE action = 'applied'",
    "DELETE FROM skein_audit",
])
def test_audit_refuses_update_and_delete(store_url, statement):
    store = CampaignStore(store_url)
    try:
        _fill(store)
        before = store.events("demo") + store.events("other")
        with pytest.raises(sa.exc.DatabaseError, match="skein_audit is append-only"):
            with store.engine.begin() as conn:
                conn.exec_driver_sql(statement)
        assert store.events("demo") + store.events("other") == before
    finally:
        store.dispose()


def test_audit_refuses_truncate_on_postgres(postgres_url):
    """TRUNCATE skips row triggers in PostgreSQL: it needs its own guard, or one statement
    wipes the whole log."""
    store = CampaignStore(postgres_url)
    try:
        _fill(store)
        with pytest.raises(sa.exc.DatabaseError, match="skein_audit is append-only"):
            with store.engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE skein_audit")
        assert len(store.events("demo")) == 7
        # the blobs are not append-only by design, nothing to check there; inserting still works
        store.record("demo", "run-3", "cli", "run_started")
        assert len(store.events("demo")) == 8
    finally:
        store.dispose()


# --- blobs ---------------------------------------------------------------------------------

BLOBS = [
    b"",
    b"SELECT user_id FROM analytics.plays\n",
    b"-- no newline at the end, CRLF inside\r\nSELECT 1\r\nFROM t",
    "SELECT 'caf\u00e9', '\u65e5\u672c' AS \u00e5\n".encode("utf-8"),
    bytes(range(256)) * 3,  # NUL bytes, invalid UTF-8
    os.urandom(1 << 20),
]


def test_blobs_round_trip(store_url):
    store = CampaignStore(store_url)
    try:
        digests = [store.put_blob(content) for content in BLOBS]
        assert digests == [hashlib.sha256(c).hexdigest() for c in BLOBS]
        assert digests == [sha256(c) for c in BLOBS]
        for digest, content in zip(digests, BLOBS):
            got = store.blob(digest)
            assert type(got) is bytes and got == content
        # idempotent: the same bytes again is the same hash and still one row
        assert store.put_blob(BLOBS[1]) == digests[1]
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM skein_blobs").scalar() == len(BLOBS)
        with pytest.raises(StoreError, match="no content with hash"):
            store.blob(hashlib.sha256(b"never stored").hexdigest())
    finally:
        store.dispose()
    assert sha256(None) is None


# --- opening the store -------------------------------------------------------------------

def test_default_store_is_sqlite_in_skein_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SKEIN_STORE_URL", raising=False)
    monkeypatch.setenv("SKEIN_HOME", str(tmp_path / "home"))
    assert default_store_url() == f"sqlite:///{tmp_path / 'home' / 'store.db'}"
    store = CampaignStore()
    try:
        store.record("demo", "r", "cli", "run_started")
    finally:
        store.dispose()
    assert (tmp_path / "home" / "store.db").is_file()
    monkeypatch.setenv("SKEIN_STORE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert CampaignStore().url == f"sqlite:///{tmp_path / 'elsewhere.db'}"


def test_unreachable_store_is_one_error_with_the_password_hidden():
    with pytest.raises(StoreError) as caught:
        CampaignStore("postgresql://skein:s3cret@127.0.0.1:1/nowhere?connect_timeout=2")
    assert "cannot open the campaign store" in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("backend,fresh", [("sqlite", True), ("postgresql", True),
                                           ("postgresql", False)],
                         ids=["sqlite-fresh", "postgresql-fresh", "postgresql-existing"])
def test_many_workers_open_the_store_at_once(request, tmp_path, backend, fresh):
    """Mapped Airflow tasks start together and each opens the store: none may fail because
    another one is creating the tables or replacing the append-only trigger at that moment.
    (Threads, each with its own engine and connections: the same race between database
    sessions as between task processes, without starting interpreters.)"""
    url = (f"sqlite:///{tmp_path / 'store.db'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_url"))
    if not fresh:
        CampaignStore(url).dispose()
    workers = 6
    barrier, failures = threading.Barrier(workers), []

    def work(number: int) -> None:
        barrier.wait(timeout=60)
        try:
            store = CampaignStore(url)
            store.record("demo", "run-1", f"task:apply_{number}", "applied", consumer=f"r/{number}.sql")
            store.dispose()
        except Exception as exc:  # noqa: BLE001 - collected, asserted below
            failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    store = CampaignStore(url)
    try:
        assert sorted(e.consumer for e in store.events("demo")) == sorted(f"r/{n}.sql" for n in range(workers))
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):  # the guard is still there
            with store.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM skein_audit")
    finally:
        store.dispose()


# --- skein audit ---------------------------------------------------------------------------

def _skein(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SKEIN), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_skein_audit_prints_the_events(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = CampaignStore(url)
    _fill(store)
    store.dispose()

    done = _skein("audit", "demo", "--store", url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(": ", 1)[1].split()[0] for line in lines] == [
        "discovered", "apply_started", "applied", "monitored", "apply_failed", "rolled_back",
        "approved"]
    old = hashlib.sha256(b"SELECT 1 FROM analytics.plays\n").hexdigest()
    new = hashlib.sha256(b"SELECT 1 FROM analytics_v2.plays\n").hexdigest()
    assert " run-1 task:apply_canary: applied [canary] r/a.sql " in lines[2]
    assert lines[2].endswith(f"{old[:12]}->{new[:12]}")
    assert lines[4].endswith("apply_failed [everyone] r/b.sql r/b.sql changed since it was planned")
    assert "user:alice: approved Approve all" in lines[6]
    assert "other" not in done.stdout and "run-9" not in done.stdout

    # the other options, through the same entry point in this process (no interpreter start)
    from skein.cli import main

    capsys.readouterr()
    assert main(["audit", "demo", "--run", "run-2", "--store", url]) == 0
    assert [line.split(": ", 1)[1].split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "rolled_back", "approved"]

    assert main(["audit", "demo", "--json", "--store", url]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in as_json][:3] == ["discovered", "apply_started", "applied"]
    assert as_json[2]["before_hash"] == old and as_json[2]["after_hash"] == new
    assert as_json[6]["detail"]["scope"] == "all"

    assert main(["audit", "nobody", "--store", url]) == 0
    nothing = capsys.readouterr()
    assert nothing.out == ""
    assert "no audit events for campaign 'nobody'" in nothing.err


def test_skein_audit_reads_the_store_in_skein_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    store = CampaignStore(f"sqlite:///{home / 'store.db'}")
    store.record("demo", "run-1", "cli", "finished", status="finished")
    store.dispose()
    env = {"SKEIN_HOME": str(home)}
    env_without_url = {k: v for k, v in os.environ.items() if k != "SKEIN_STORE_URL"}
    done = subprocess.run([str(SKEIN), "audit", "demo"], capture_output=True, text=True,
                          timeout=120, env={**env_without_url, **env})
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("run-1 cli: finished")


# --- the portal's index of the log -------------------------------------------------------

def _latest_rows(store: CampaignStore) -> list[tuple]:
    from skein.store import consumer_latest

    with store.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.select(consumer_latest)))


def test_consumer_latest_follows_the_log_and_rebuilds_from_it(store_url):
    """``skein_consumer_latest`` is written with each event (an index of the log): it says what
    the log says, and an older store without it gets it rebuilt when opened."""
    store = CampaignStore(store_url)
    _fill(store)
    store.record("demo", "-", "user:bob", "consumer_skipped", consumer="r/c.sql")
    states = store.consumer_states("demo")
    rows = {(c, k): (s, h) for c, k, s, h in _latest_rows(store)}
    assert {k: s for (c, k), (s, h) in rows.items() if c == "demo" and s} == \
        {cid: e.id for cid, e in states.items()}
    assert rows[("demo", "r/c.sql")][1] == store.latest("demo", (Action.CONSUMER_SKIPPED,)).id
    before = _latest_rows(store)
    store.rebuild_latest()
    assert _latest_rows(store) == before
    with store.engine.begin() as conn:  # as a store written before the table existed
        conn.exec_driver_sql("DROP TABLE skein_consumer_latest")
    store.dispose()
    reopened = CampaignStore(store_url)
    assert _latest_rows(reopened) == before
    reopened.dispose()
