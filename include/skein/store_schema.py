"""The campaign store's tables, indexes and triggers (``skein.store`` is what reads and writes
them): the append-only audit log, replaced contents, leases, and two indexes of the log the
portal's lists read (``skein_consumers``: the latest plan of each consumer;
``skein_consumer_latest``: each consumer's newest state event and hold).

>>> sorted(metadata.tables)
['skein_audit', 'skein_blobs', 'skein_consumer_latest', 'skein_consumers', 'skein_leases']
"""

from __future__ import annotations

import sqlalchemy as sa

from skein.audit import CONSUMER_STATES, HOLD_DECISIONS

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

# Per consumer, the ids of its newest state event and newest hold: an index of the log, like
# a database index. Written in the same transaction as each such event, so it never disagrees
# with the log, and rebuilt from the log by ``rebuild_latest`` (a store older than it, a bulk
# load). With it a 10,000-consumer list filters and counts by state without a scan of the log.
consumer_latest = sa.Table(
    "skein_consumer_latest", metadata,
    sa.Column("campaign", sa.String(64), primary_key=True),
    sa.Column("consumer", sa.String(1000), primary_key=True),
    sa.Column("state_id", sa.Integer),  # newest of skein.audit.CONSUMER_STATES
    sa.Column("hold_id", sa.Integer),  # newest of skein.audit.HOLD_DECISIONS (held or released)
)

# Portal reads (latest event of an action per consumer, is the campaign paused) must not scan
# a campaign's whole log: 10,000 consumers write ~50,000 rows.
INDEXES = (sa.Index("ix_skein_audit_action", audit.c.campaign, audit.c.action, audit.c.id),
            sa.Index("ix_skein_audit_consumer", audit.c.campaign, audit.c.consumer, audit.c.action,
                     audit.c.id),
            sa.Index("ix_skein_consumers_seq", consumers.c.campaign, consumers.c.seq))

APPEND_ONLY = {
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


LATEST_COLUMN = {**{a: "state_id" for a in CONSUMER_STATES}, **{a: "hold_id" for a in HOLD_DECISIONS}}


def upsert_latest(conn, campaign: str, consumer: str, column: str, event_id: int) -> None:
    """Point ``consumer``'s ``column`` at ``event_id``, unless a newer event is already there
    (two PostgreSQL transactions may commit out of id order)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        newest = sa.func.greatest
    else:
        from sqlalchemy.dialects.sqlite import insert

        newest = sa.func.max  # SQLite's two-argument max is the larger one, NULL if either is
    statement = insert(consumer_latest).values(campaign=campaign, consumer=consumer, **{column: event_id})
    current = sa.func.coalesce(consumer_latest.c[column], 0)
    conn.execute(statement.on_conflict_do_update(
        index_elements=["campaign", "consumer"],
        set_={column: newest(current, statement.excluded[column])}))
