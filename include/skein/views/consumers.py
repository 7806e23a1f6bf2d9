"""Consumer read models: a filtered page of a campaign's consumers (``LIMIT``/``OFFSET`` in
SQL, with the total), and everything known about one consumer.

>>> from skein.store import CampaignStore
>>> from skein.views.status import example_row
>>> store = CampaignStore("sqlite://")
>>> store.index_consumers("demo", "r1", [example_row(f"r/{n}.sql", seq=n, owner="ab"[n % 2])
...                                      for n in range(5)])
>>> page = consumer_page(store, "demo", ConsumerFilter(owner="a"), limit=2, offset=0)
>>> [c.id for c in page.items], page.total
(['r/0.sql', 'r/2.sql'], 3)
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field

from skein.controls import pending_retries
from skein.paths import GIT_NO_REPO_PROGRAMS
from skein.store import CampaignStore, Event, consumers
from skein.views.sources import Sources, run_dir
from skein.views.status import consumer_status

MAX_PAGE = 500


class ConsumerFilter(BaseModel):
    """Every field is optional; ``search`` matches part of the consumer id."""

    status: str | None = None
    owner: str | None = None
    tier: int | None = None
    kind: str | None = None
    wave: str | None = None
    search: str | None = Field(None, max_length=200)


class ConsumerSummary(BaseModel):
    id: str
    order: int
    owner: str
    tier: int | None
    kind: str
    impact: str
    wave: str | None
    status: str
    plan_status: str
    reason: str | None
    agent: str | None
    changes: int
    simulation: str | None
    run_id: str  # the run whose plan this is
    held_by: str | None
    held_why: str | None = None  # the reason the person gave for the skip or escalation
    changed_at: datetime | None  # its latest state event


class ConsumerPage(BaseModel):
    items: list[ConsumerSummary]
    total: int
    limit: int
    offset: int


class AuditEntry(BaseModel):
    id: int
    at: datetime
    run_id: str
    actor: str
    action: str
    consumer: str | None
    wave: str | None
    before_hash: str | None
    after_hash: str | None
    message: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, e: Event) -> AuditEntry:
        return cls(id=e.id, at=e.at, run_id=e.run_id, actor=e.actor, action=str(e.action),
                   consumer=e.consumer, wave=e.wave, before_hash=e.before_hash,
                   after_hash=e.after_hash, message=e.detail.get("message"), detail=e.detail)


class Produced(BaseModel):
    """What applying the consumer wrote: commits in its repository, or the view replaced."""

    kind: str  # file | view
    repo: str | None = None
    path: str | None = None
    view: str | None = None
    after_hash: str | None = None
    commits: list[dict[str, str]] = []  # sha, date, subject (newest first)


class ConsumerDetail(BaseModel):
    summary: ConsumerSummary
    diff: str | None
    agent: dict | None  # the agents' final result (Patch, Escalation or Unchanged, as JSON)
    simulation: dict | None  # parity verdict, differing rows (samples), expectations (GE)
    refuted_by: str | None  # the dry run's verdict sent back to the LLM agent
    transcripts: list[dict]  # the LLM agent's attempts: prompts, answers, verdicts
    history: list[AuditEntry]
    produced: Produced | None
    retry_pending: bool


def _where(columns, f: ConsumerFilter, with_status: bool = True) -> list:
    """The filter as SQL over ``columns`` (``consumer_status``'s, or the index table's when
    the status is not filtered: counting then needs no audit log at all)."""
    pairs = (("owner", f.owner), ("tier", f.tier), ("kind", f.kind), ("wave", f.wave))
    clauses = [getattr(columns, name) == value for name, value in pairs if value is not None]
    if with_status and f.status is not None:
        clauses.append(columns.status == f.status)
    if f.search:
        escaped = f.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(columns.consumer.like(f"%{escaped}%", escape="\\"))
    return clauses


def consumer_page(store: CampaignStore, campaign_id: str, f: ConsumerFilter, *, limit: int = 50,
                  offset: int = 0) -> ConsumerPage:
    """The consumers matching ``f`` in migration order, ``limit`` from ``offset``."""
    limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
    s = consumer_status(campaign_id)
    where = _where(s.c, f)
    page = sa.select(s).where(*where).order_by(s.c.seq, s.c.consumer).limit(limit).offset(offset)
    count = (sa.select(sa.func.count()).select_from(s).where(*where) if f.status is not None else
             sa.select(sa.func.count()).select_from(consumers)
             .where(consumers.c.campaign == campaign_id, *_where(consumers.c, f, with_status=False)))
    with store.engine.connect() as conn:
        total = conn.execute(count).scalar_one()
        items = [summary_of(row) for row in conn.execute(page)]
    return ConsumerPage(items=items, total=total, limit=limit, offset=offset)


def summary_of(row) -> ConsumerSummary:
    return ConsumerSummary(
        id=row.consumer, order=row.seq, owner=row.owner, tier=row.tier, kind=row.kind,
        impact=row.impact, wave=row.wave, status=row.status, plan_status=row.plan_status,
        reason=row.reason, agent=row.agent, changes=row.changes, simulation=row.simulation,
        run_id=row.run_id, held_by=row.hold_by,
        held_why=json.loads(row.hold_detail).get("message") if row.hold_detail else None,
        changed_at=row.state_at)


def consumer_row(store: CampaignStore, campaign_id: str, consumer_id: str):
    """The consumer's ``consumer_status`` row, or None when no run planned it."""
    s = consumer_status(campaign_id)
    with store.engine.connect() as conn:
        return conn.execute(sa.select(s).where(s.c.consumer == consumer_id)).first()


def consumer_ids(store: CampaignStore, campaign_id: str, status: str) -> list[str]:
    """Every consumer of ``campaign_id`` with ``status``, in migration order."""
    s = consumer_status(campaign_id)
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(s.c.consumer).where(s.c.status == status)
                                 .order_by(s.c.seq, s.c.consumer)).scalars())


def consumer_detail(src: Sources, campaign_id: str, consumer_id: str) -> ConsumerDetail | None:
    """Everything about one consumer, or None when no run of the campaign planned it."""
    from skein.rundir import file_name

    row = consumer_row(src.store, campaign_id, consumer_id)
    if row is None:
        return None
    files, name = run_dir(src, campaign_id, row.run_id), file_name(consumer_id)
    history = src.store.events(campaign_id, consumer=consumer_id)
    retry = _json(files / "retry" / f"{name}.json")
    return ConsumerDetail(
        summary=summary_of(row), diff=_text(files / "patches" / f"{name}.diff"),
        agent=retry["result"] if retry else _json(files / "agents" / f"{name}.json"),
        simulation=_json(files / "simulation" / f"{name}.json"),
        refuted_by=retry["refuted_by"] if retry else None,
        transcripts=[t for t in (_json(files / "llm" / f"{name}.json"),
                                 _json(files / "llm" / f"{name}.retry.json")) if t],
        history=[AuditEntry.of(e) for e in history],
        produced=produced(campaign_id, row, history),
        retry_pending=consumer_id in pending_retries(src.store, campaign_id))


def produced(campaign_id: str, row, history: list[Event]) -> Produced | None:
    """The commits (file) or view (warehouse) the campaign wrote for the consumer, if any."""
    written = [e for e in history if e.action in ("applied", "rolled_back")]
    if not written:
        return None
    if row.repo is None:
        return Produced(kind="view", view=row.consumer.split("/", 1)[-1],
                        after_hash=written[-1].after_hash)
    return Produced(kind="file", repo=row.repo, path=row.path, after_hash=written[-1].after_hash,
                    commits=campaign_commits(Path(row.repo), row.path, campaign_id))


def campaign_commits(repo: Path, path: str, campaign_id: str, limit: int = 10) -> list[dict[str, str]]:
    """The campaign's commits touching ``path`` (its branch commits, merges and rollbacks)."""
    try:
        out = subprocess.run(
            ["git", *GIT_NO_REPO_PROGRAMS, "-C", str(repo), "log", "--all", f"-n{limit}", "--format=%H%x1f%aI%x1f%s",
             "-F", f"--grep=skein({campaign_id})", "--", path],
            capture_output=True, text=True, timeout=10, check=True,
            env={**os.environ, "GIT_LITERAL_PATHSPECS": "1"}).stdout  # `[ab].sql` is one file
    except (OSError, subprocess.SubprocessError):
        return []  # no git, or the repository is gone: the audit log still says what happened
    return [dict(zip(("sha", "date", "subject"), line.split("\x1f"), strict=False))
            for line in out.splitlines() if line]


def _text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class AuditPage(BaseModel):
    items: list[AuditEntry]  # newest first
    total: int
    limit: int
    offset: int


def audit_page(store: CampaignStore, campaign_id: str, *, consumer: str | None = None,
               limit: int = 100, offset: int = 0) -> AuditPage:
    """The campaign's audit log (of one consumer), newest first, a page at a time."""
    from skein.store import audit, event_of

    limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
    where = [audit.c.campaign == campaign_id] + ([audit.c.consumer == consumer] if consumer else [])
    with store.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(audit).where(*where)).scalar_one()
        rows = conn.execute(sa.select(audit).where(*where).order_by(audit.c.id.desc())
                            .limit(limit).offset(offset)).all()
    return AuditPage(items=[AuditEntry.of(event_of(r)) for r in rows], total=total, limit=limit,
                     offset=offset)
