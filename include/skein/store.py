"""The campaign store: an append-only audit log, and the exact bytes Skein replaced.

Every action and state change is one row of ``skein_audit`` (who or which task, when, what,
before/after content hashes, run id); rows are never updated or deleted (a database trigger
refuses it). Per-consumer state is *derived* from the log (the last state-changing event),
so there is no second copy to drift from it. ``skein_blobs`` keeps every content Skein
replaced or wrote, by SHA-256, so a rollback restores the exact previous bytes.

SQLite file by default (the embedded setup), PostgreSQL when ``SKEIN_STORE_URL`` says so;
SQLAlchemy Core because both must behave the same and Airflow already ships it.

>>> store = CampaignStore("sqlite://")
>>> store.record("demo", "run-1", "task:apply", "applied", consumer="repo/a.sql",
...              before=sha256(b"old"), after=sha256(b"new"))
1
>>> store.consumer_states("demo")["repo/a.sql"].action is Action.APPLIED
True
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from skein.audit import CONSUMER_STATES, HOLD_DECISIONS, Action
from skein.errors import SkeinError
from skein.store_schema import (  # noqa: F401 - tables re-exported: skein.store is the API
    APPEND_ONLY,
    INDEXES,
    LATEST_COLUMN,
    audit,
    blobs,
    consumer_latest,
    consumers,
    leases,
    metadata,
    upsert_latest,
)


class StoreError(SkeinError):
    """The campaign store cannot be opened or refused a write."""


def sha256(content: bytes | None) -> str | None:
    """Content hash as recorded in the audit log (``None`` for "did not exist")."""
    return None if content is None else hashlib.sha256(content).hexdigest()


def skein_home() -> Path:
    """``$SKEIN_HOME``, else ``$AIRFLOW_HOME/skein`` inside Airflow, else ``./.skein``."""
    if os.environ.get("SKEIN_HOME"):
        return Path(os.environ["SKEIN_HOME"])
    if os.environ.get("AIRFLOW_HOME"):
        return Path(os.environ["AIRFLOW_HOME"]) / "skein"
    return Path.cwd() / ".skein"


def default_store_url() -> str:
    """``$SKEIN_STORE_URL`` (e.g. ``postgresql+psycopg2://...``), else SQLite in Skein's home."""
    if os.environ.get("SKEIN_STORE_URL"):
        return os.environ["SKEIN_STORE_URL"]
    home = skein_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'store.db'}"


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    campaign: str
    run_id: str
    actor: str
    action: Action
    consumer: str | None
    wave: str | None
    before_hash: str | None
    after_hash: str | None
    detail: dict[str, Any]


class CampaignStore:
    def __init__(self, url: str | None = None):
        self.url = url or default_store_url()
        try:
            self.engine = _engine(self.url)
            self._create_schema()
        except (sa.exc.SQLAlchemyError, ImportError) as exc:  # ImportError: no driver (mysql://)
            raise StoreError(f"cannot open the campaign store {_redact(self.url)}: "
                             f"{str(exc).splitlines()[0]}") from None

    def _create_schema(self) -> None:
        """Tables and the append-only triggers. Mapped tasks open the store at the same
        moment: PostgreSQL serialises them on an advisory lock (concurrent CREATE TABLE / OR
        REPLACE FUNCTION fail with "duplicate key" / "tuple concurrently updated"); SQLite's
        DDL is not transactional here, so a process that lost the race to create a table
        tries again and then finds it; and a SQLite transaction that read the schema before
        another process wrote it cannot take the write lock ("database is locked" at once,
        whatever the busy timeout): it starts over too."""
        for attempt in range(10):
            try:
                with self.engine.begin() as conn:
                    if self.engine.dialect.name == "postgresql":
                        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7340155, 1)")
                    metadata.create_all(conn)
                    for index in INDEXES:  # create_all skips the indexes of existing tables
                        index.create(conn, checkfirst=True)
                    for statement in APPEND_ONLY.get(self.engine.dialect.name, []):
                        conn.exec_driver_sql(statement)
                    stale = (conn.execute(sa.select(consumer_latest.c.campaign).limit(1)).first() is None
                             and conn.execute(sa.select(audit.c.id).where(audit.c.consumer.is_not(None))
                                              .limit(1)).first() is not None)
                if stale:  # a store written before skein_consumer_latest existed
                    self.rebuild_latest()
                return
            except sa.exc.OperationalError as exc:
                if not any(lost in str(exc) for lost in ("already exists", "database is locked")) \
                        or attempt == 9:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def record(self, campaign: str, run_id: str, actor: str, action: Action | str, *,
               consumer: str | None = None, wave: str | None = None, before: str | None = None,
               after: str | None = None, **detail: Any) -> int:
        """Append one event; returns its id. ``action`` must be one of ``skein.audit.Action``
        (a misspelt action would be an event no query ever finds)."""
        row = {"at": datetime.now(UTC), "campaign": campaign, "run_id": run_id, "actor": actor,
               "action": Action(action).value, "consumer": consumer, "wave": wave, "before_hash": before,
               "after_hash": after, "detail": json.dumps(detail, default=str, sort_keys=True)}
        with self.engine.begin() as conn:
            event_id = conn.execute(audit.insert().values(**row)).inserted_primary_key[0]
            column = LATEST_COLUMN.get(Action(action))
            if consumer is not None and column is not None:
                upsert_latest(conn, campaign, consumer, column, event_id)
            return event_id

    def rebuild_latest(self) -> None:
        """Rebuild ``skein_consumer_latest`` from the log (after a bulk load, or for a store
        written before the table existed)."""
        def newest(actions):
            return sa.func.max(sa.case((audit.c.action.in_([a.value for a in actions]), audit.c.id)))

        rows = (sa.select(audit.c.campaign, audit.c.consumer, newest(CONSUMER_STATES), newest(HOLD_DECISIONS))
                .where(audit.c.consumer.is_not(None)).group_by(audit.c.campaign, audit.c.consumer))
        with self.engine.begin() as conn:
            conn.execute(consumer_latest.delete())
            conn.execute(consumer_latest.insert().from_select(
                ["campaign", "consumer", "state_id", "hold_id"], rows))

    def index_consumers(self, campaign: str, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Make ``rows`` (columns of ``skein_consumers``) the latest plan of their consumers;
        consumers this run did not plan keep the row of the run that last did.

        ``seq`` is the consumer's place in the campaign's order, kept from its first plan: a
        later run plans only what is left (1, 2, ...), and renumbering those would give two
        consumers one number and interleave the runs' consumers in the list (issue 20). A
        consumer first planned later comes after every earlier one, in its run's order."""
        with self.engine.begin() as conn:
            first = dict(conn.execute(sa.select(consumers.c.consumer, consumers.c.seq)
                                      .where(consumers.c.campaign == campaign)).all())
            after = max(first.values(), default=0)
            rows = [{**row, "seq": first.get(row["consumer"], after + row["seq"])} for row in rows]
            ids = [row["consumer"] for row in rows]
            for start in range(0, len(ids), 500):  # bound the IN list
                conn.execute(consumers.delete().where(consumers.c.campaign == campaign)
                             .where(consumers.c.consumer.in_(ids[start:start + 500])))
            if rows:
                conn.execute(consumers.insert(), [{**row, "campaign": campaign, "run_id": run_id}
                                                  for row in rows])

    def latest(self, campaign: str, actions: tuple[Action, ...], *,
               consumer: str | None = None) -> Event | None:
        """The campaign's newest event of ``actions`` (of one consumer): one index seek per
        action (``max(id)`` on ``ix_skein_audit_action`` / ``_consumer``), however long the log."""
        where = [audit.c.campaign == campaign] + ([audit.c.consumer == consumer] if consumer else [])
        with self.engine.connect() as conn:
            ids = [conn.execute(sa.select(sa.func.max(audit.c.id))
                                .where(*where, audit.c.action == Action(a).value)).scalar()
                   for a in actions]
            newest = max((i for i in ids if i is not None), default=None)
            row = conn.execute(sa.select(audit).where(audit.c.id == newest)).first() if newest else None
        return event_of(row) if row is not None else None

    def put_blob(self, content: bytes) -> str:
        """Keep ``content`` (idempotent); returns its hash."""
        digest = sha256(content)
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(blobs.c.sha256).where(blobs.c.sha256 == digest)).first()
            if exists is None:
                try:
                    conn.execute(blobs.insert().values(sha256=digest, content=content))
                except sa.exc.IntegrityError:  # another worker stored the same bytes meanwhile
                    pass
        return digest

    def blob(self, digest: str) -> bytes:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(blobs.c.content).where(blobs.c.sha256 == digest)).first()
        if row is None:
            raise StoreError(f"the store has no content with hash {digest}")
        return bytes(row[0])

    def events(self, campaign: str, run_id: str | None = None, *, consumer: str | None = None,
               actions: tuple[Action, ...] | None = None) -> list[Event]:
        """The campaign's events (of one run, one consumer, some actions), oldest first."""
        where = [audit.c.campaign == campaign]
        if run_id is not None:
            where.append(audit.c.run_id == run_id)
        if consumer is not None:
            where.append(audit.c.consumer == consumer)
        if actions is None:
            query = sa.select(audit).where(*where).order_by(audit.c.id)
        else:  # one part per action, so each reads its stretch of an index, not the whole log
            parts = [sa.select(audit).where(*where, audit.c.action == Action(a).value) for a in actions]
            union = sa.union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
            query = sa.select(union).order_by(union.c.id)
        with self.engine.connect() as conn:
            return [event_of(row) for row in conn.execute(query)]

    def consumer_states(self, campaign: str, run_id: str | None = None) -> dict[str, Event]:
        """The last state-changing event of every consumer (of one run, or of all runs)."""
        latest: dict[str, Event] = {}
        for event in self.events(campaign, run_id, actions=CONSUMER_STATES):
            if event.consumer is not None:
                latest[event.consumer] = event
        return latest

    def acquire(self, name: str, holder: str, *, pid: int | None = None,
                ttl_s: float | None = None) -> Lease | None:
        """Take the lease ``name`` for ``holder``; returns None on success, else the lease
        that stands in the way. The same holder takes it again (a retried task), unless it
        is a process (``pid``) other than a live one holding it; a lease that expired, or
        whose process on this host is gone, is taken over.

        >>> store = CampaignStore("sqlite://")
        >>> store.acquire("run:demo", "run-1") is None, store.acquire("run:demo", "run-2").holder
        (True, 'run-1')
        >>> store.release("run:demo", "run-1"); store.acquire("run:demo", "run-2") is None
        True
        """
        now = datetime.now(UTC)
        row = {"name": name, "holder": holder, "host": socket.gethostname() if pid else None,
               "pid": pid, "acquired_at": now,
               "expires_at": now + timedelta(seconds=ttl_s) if ttl_s else None}
        for _ in range(3):
            with self.engine.begin() as conn:
                found = conn.execute(sa.select(leases).where(leases.c.name == name)).first()
                if found is None:
                    try:
                        conn.execute(leases.insert().values(**row))
                        return None
                    except sa.exc.IntegrityError:  # taken meanwhile: look again
                        continue
                current = _lease(found)
                if current.blocks(holder, pid, now):
                    return current
                conn.execute(leases.update().where(leases.c.name == name)
                             .where(leases.c.holder == found.holder).values(**row))
                return None
        return self.lease(name)

    def release(self, name: str, holder: str) -> None:
        """Give the lease back (only its holder can)."""
        with self.engine.begin() as conn:
            conn.execute(leases.delete().where(leases.c.name == name).where(leases.c.holder == holder))

    def break_lease(self, name: str) -> Lease | None:
        """Take the lease from whoever holds it (a person, after a run died for good); returns
        what was held."""
        held = self.lease(name)
        if held is not None:
            self.release(name, held.holder)
        return held

    def lease(self, name: str) -> Lease | None:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(leases).where(leases.c.name == name)).first()
        return _lease(found) if found is not None else None

    def dispose(self) -> None:
        self.engine.dispose()


# A lease whose holder cannot be checked for life counts as alive this long after it was taken
# or renewed (``acquire`` by its holder again: discovery, each apply batch and the rollback do).
RENEWED_S = 600


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    host: str | None
    pid: int | None
    acquired_at: datetime
    expires_at: datetime | None

    def blocks(self, holder: str, pid: int | None, now: datetime) -> bool:
        """Whether this lease keeps ``holder`` (process ``pid``) out at ``now``."""
        if self.expires_at is not None and self.expires_at <= now:
            return False
        if self.pid is not None and self.host == socket.gethostname() and not _alive(self.pid):
            return False  # its process died without giving it back
        return self.holder != holder or (self.pid is not None and pid is not None and self.pid != pid)

    def unlock_refusal(self, *, force: bool = False, now: datetime | None = None) -> str | None:
        """Why a person may not free this lease now (``skein unlock``), or None. A holder is
        alive while its process on this host runs, or (where that cannot be checked: another
        host, a run of many processes such as an Airflow DAG run) while its lease was renewed
        within ``RENEWED_S``; past that, only ``force`` (a person who knows it is dead) frees it.

        >>> old = datetime(2026, 1, 1, tzinfo=UTC)
        >>> far = Lease("run:c", "c/r", "elsewhere.invalid", 42, old, None)
        >>> far.unlock_refusal(now=old + timedelta(seconds=30))
        'its run renewed the lease 30 s ago (a live run renews it at discovery and at every write step): wait, or stop that run'
        >>> far.unlock_refusal(now=old + timedelta(hours=1))[:60]
        'held by process 42 on host elsewhere.invalid, which cannot b'
        >>> far.unlock_refusal(now=old + timedelta(hours=1), force=True) is None
        True
        """
        now = now or datetime.now(UTC)
        if self.expires_at is not None and self.expires_at <= now:
            return None
        if self.pid is not None and self.host == socket.gethostname():
            return f"process {self.pid} on this host is running: stop it first" if _alive(self.pid) else None
        age = (now - self.acquired_at).total_seconds()
        if age < RENEWED_S:
            return (f"its run renewed the lease {age:.0f} s ago (a live run renews it at discovery "
                    "and at every write step): wait, or stop that run")
        if force:
            return None
        where = (f"process {self.pid} on host {self.host}" if self.pid
                 else "a run of several processes (an Airflow DAG run)")
        return (f"held by {where}, which cannot be checked from here: if it is dead for good, "
                "free it with `skein unlock --force`")

    def describe(self) -> str:
        where = f" (process {self.pid} on {self.host})" if self.pid else ""
        return f"{self.holder}{where} since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process: alive
        return True
    return True


def _lease(row) -> Lease:
    def utc(value):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)

    return Lease(name=row.name, holder=row.holder, host=row.host, pid=row.pid,
                 acquired_at=utc(row.acquired_at), expires_at=utc(row.expires_at))


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        # Several task processes write at once (LocalExecutor): WAL lets readers go on, and
        # writers wait for each other instead of failing with "database is locked".
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def event_of(row) -> Event:
    """An audit row as an ``Event``."""
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)  # SQLite drops the zone
    return Event(id=row.id, at=at, campaign=row.campaign, run_id=row.run_id, actor=row.actor,
                 action=Action(row.action), consumer=row.consumer, wave=row.wave,
                 before_hash=row.before_hash, after_hash=row.after_hash,
                 detail=json.loads(row.detail or "{}"))


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid store URL>"


def render_audit(events: list[Event]) -> str:
    """The audit log as aligned text, one event a line (``skein audit``)."""
    lines = []
    for e in events:
        hashes = ""
        if e.before_hash or e.after_hash:
            hashes = f" {(e.before_hash or '-')[:12]}->{(e.after_hash or '-')[:12]}"
        target = f" {e.consumer}" if e.consumer else ""
        wave = f" [{e.wave}]" if e.wave else ""
        note = f" {e.detail['message']}" if e.detail.get("message") else ""
        lines.append(f"{e.at:%Y-%m-%d %H:%M:%S} {e.run_id} {e.actor}: {e.action}{wave}{target}"
                     f"{hashes}{note}")
    return "\n".join(lines)
