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

from skein.audit import CONSUMER_STATES, Action
from skein.errors import SkeinError

metadata = sa.MetaData()

audit = sa.Table(
    "skein_audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("campaign", sa.String(64), nullable=False, index=True),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("actor", sa.String(250), nullable=False),  # "user:alice", "task:apply_canary", "cli"
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("consumer", sa.String(1000)),
    sa.Column("wave", sa.String(64)),
    sa.Column("before_hash", sa.String(64)),
    sa.Column("after_hash", sa.String(64)),
    sa.Column("detail", sa.Text),  # JSON
)

blobs = sa.Table(
    "skein_blobs", metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("content", sa.LargeBinary, nullable=False),
)


# Who holds what right now (a campaign's run, a consumer's write). Not history: the audit
# log is. Rows are taken and given back; an expired or dead-process lease can be taken over.
leases = sa.Table(
    "skein_leases", metadata,
    sa.Column("name", sa.String(1100), primary_key=True),  # "run:<campaign>", "consumer:<id>"
    sa.Column("holder", sa.String(300), nullable=False),  # a run id
    sa.Column("host", sa.String(255)),  # with pid: a process that can be checked for life
    sa.Column("pid", sa.Integer),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),  # None: until given back
)

# The latest plan of every consumer of a campaign (one row each, from the last run that planned
# it): what the portal pages and filters with SQL. Not history and not state: a consumer's
# state is still derived from the audit log; this only says what the plan was.
consumers = sa.Table(
    "skein_consumers", metadata,
    sa.Column("campaign", sa.String(64), primary_key=True),
    sa.Column("consumer", sa.String(1000), primary_key=True),
    sa.Column("run_id", sa.String(250), nullable=False),  # the run whose plan this is
    sa.Column("seq", sa.Integer, nullable=False),  # migration order
    sa.Column("owner", sa.String(250), nullable=False),
    sa.Column("tier", sa.Integer),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("impact", sa.String(16), nullable=False),  # direct | transitive
    sa.Column("wave", sa.String(64)),
    sa.Column("plan_status", sa.String(16), nullable=False),  # skein.plan.PlanStatus
    sa.Column("reason", sa.Text),
    sa.Column("agent", sa.String(16)),
    sa.Column("changes", sa.Integer, nullable=False, default=0),
    sa.Column("simulation", sa.String(16)),
    sa.Column("repo", sa.String(1000)),  # the repository's folder, for the commit produced
    sa.Column("path", sa.String(1000)),
)

# Portal reads (latest event of an action per consumer, is the campaign paused) must not scan
# a campaign's whole log: 10,000 consumers write ~50,000 rows.
_INDEXES = (sa.Index("ix_skein_audit_action", audit.c.campaign, audit.c.action, audit.c.id),
            sa.Index("ix_skein_audit_consumer", audit.c.campaign, audit.c.consumer, audit.c.action,
                     audit.c.id),
            sa.Index("ix_skein_consumers_owner", consumers.c.campaign, consumers.c.owner))

_APPEND_ONLY = {
    "sqlite": [
        "CREATE TRIGGER IF NOT EXISTS skein_audit_no_update BEFORE UPDATE ON skein_audit "
        "BEGIN SELECT RAISE(ABORT, 'skein_audit is append-only'); END",
        "CREATE TRIGGER IF NOT EXISTS skein_audit_no_delete BEFORE DELETE ON skein_audit "
        "BEGIN SELECT RAISE(ABORT, 'skein_audit is append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION skein_audit_append_only() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'skein_audit is append-only'; END $$ LANGUAGE plpgsql",
        "DROP TRIGGER IF EXISTS skein_audit_append_only ON skein_audit",
        "CREATE TRIGGER skein_audit_append_only BEFORE UPDATE OR DELETE ON skein_audit "
        "FOR EACH ROW EXECUTE FUNCTION skein_audit_append_only()",
        # TRUNCATE fires no row trigger: without this one statement would empty the log.
        "DROP TRIGGER IF EXISTS skein_audit_no_truncate ON skein_audit",
        "CREATE TRIGGER skein_audit_no_truncate BEFORE TRUNCATE ON skein_audit "
        "FOR EACH STATEMENT EXECUTE FUNCTION skein_audit_append_only()",
    ],
}


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
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot open the campaign store {_redact(self.url)}: "
                             f"{str(exc).splitlines()[0]}") from None

    def _create_schema(self) -> None:
        """Tables and the append-only triggers. Mapped tasks open the store at the same
        moment: PostgreSQL serialises them on an advisory lock (concurrent CREATE TABLE / OR
        REPLACE FUNCTION fail with "duplicate key" / "tuple concurrently updated"); SQLite's
        DDL is not transactional here, so a process that lost the race to create a table
        tries again and then finds it."""
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    if self.engine.dialect.name == "postgresql":
                        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7340155, 1)")
                    metadata.create_all(conn)
                    for index in _INDEXES:  # create_all skips the indexes of existing tables
                        index.create(conn, checkfirst=True)
                    for statement in _APPEND_ONLY.get(self.engine.dialect.name, []):
                        conn.exec_driver_sql(statement)
                return
            except sa.exc.OperationalError as exc:
                if "already exists" not in str(exc) or attempt == 4:
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
            return conn.execute(audit.insert().values(**row)).inserted_primary_key[0]

    def index_consumers(self, campaign: str, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Make ``rows`` (columns of ``skein_consumers``) the latest plan of their consumers;
        consumers this run did not plan keep the row of the run that last did."""
        with self.engine.begin() as conn:
            ids = [row["consumer"] for row in rows]
            for start in range(0, len(ids), 500):  # bound the IN list
                conn.execute(consumers.delete().where(consumers.c.campaign == campaign)
                             .where(consumers.c.consumer.in_(ids[start:start + 500])))
            if rows:
                conn.execute(consumers.insert(), [{**row, "campaign": campaign, "run_id": run_id}
                                                  for row in rows])

    def latest(self, campaign: str, actions: tuple[Action, ...], *,
               consumer: str | None = None) -> Event | None:
        """The campaign's newest event of ``actions`` (of one consumer), read by index."""
        query = (sa.select(audit).where(audit.c.campaign == campaign)
                 .where(audit.c.action.in_([Action(a).value for a in actions]))
                 .order_by(audit.c.id.desc()).limit(1))
        if consumer is not None:
            query = query.where(audit.c.consumer == consumer)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
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
        query = sa.select(audit).where(audit.c.campaign == campaign).order_by(audit.c.id)
        if run_id is not None:
            query = query.where(audit.c.run_id == run_id)
        if consumer is not None:
            query = query.where(audit.c.consumer == consumer)
        if actions is not None:
            query = query.where(audit.c.action.in_([Action(a).value for a in actions]))
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
