"""The one vocabulary of consumer statuses: what the approval, the portal, the CLI, the
summary and the docs call a consumer's state (issue 20: the approval said patched/unchanged
while the portal said pending/verified/blocked, for the same consumers).

A plan's statuses (``skein.plan.PlanStatus``: patched, escalated, unchanged, failed) are what
the agents and the dry run decided; ``of_plan`` names them in this vocabulary, and the store's
audit log moves a consumer on from there (``skein.views.status``).

>>> Status.PENDING.description
'a patch waiting for its wave'
>>> [str(s) for s in (of_plan("patched", "pass"), of_plan("unchanged", "skipped"), of_plan("failed"))]
['pending', 'blocked', 'failed']
>>> sorted(str(s) for s in NEEDS_HUMAN)
['blocked', 'escalated', 'failed', 'rolled_back']
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A consumer's status, in the order lists and counts show them."""

    description: str

    def __new__(cls, value: str, description: str):
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    PENDING = "pending", "a patch waiting for its wave"
    APPLYING = "applying", "being written (or its writer was killed: the next run finishes it)"
    APPLIED = "applied", "migrated: the patch is merged or the view replaced"
    VERIFIED = "verified", "unchanged code the dry run verified against its migrated upstream"
    BLOCKED = "blocked", "unchanged but not verifiable: an upstream it reads is not migrated"
    ESCALATED = "escalated", "a human must migrate it (an agent or a person escalated it)"
    FAILED = "failed", "the dry run refuted its patch, or applying or monitoring it failed"
    ROLLED_BACK = "rolled_back", "a rollback restored its previous content"
    SKIPPED = "skipped", "a person left it out of the campaign's later waves"


STATUSES: tuple[Status, ...] = tuple(Status)
# Still reading the old dataset (or its code not yet touched): what the burndown counts down.
NOT_MIGRATED = (Status.PENDING, Status.APPLYING, Status.SKIPPED, Status.ESCALATED, Status.FAILED,
                Status.ROLLED_BACK)
# Nothing left to do for the campaign.
DONE = (Status.APPLIED, Status.VERIFIED)
# No run will migrate these by itself: a person must act (fix, release, retry).
NEEDS_HUMAN = (Status.ESCALATED, Status.BLOCKED, Status.FAILED, Status.ROLLED_BACK)


def of_plan(plan_status: str, simulation: str | None = None) -> Status:
    """A plan item's status in this vocabulary (``simulation``: the dry run's verdict)."""
    if plan_status == "patched":
        return Status.PENDING
    if plan_status == "unchanged":
        return Status.VERIFIED if simulation in (None, "pass") else Status.BLOCKED
    if plan_status in (Status.ESCALATED, Status.FAILED):
        return Status(plan_status)
    # A plan status this vocabulary does not name yet (a new one in skein.plan): not applied
    # and not verifiable, so blocked, rather than a crash of the summary or the portal.
    return Status.BLOCKED


def what_is_left(counts: dict[str, int]) -> str | None:
    """What keeps a campaign from being done, from its consumers per status; None when done.

    >>> what_is_left({"applied": 20, "escalated": 9, "blocked": 4, "skipped": 1})
    '13 need a human (9 escalated, 4 blocked), 1 skipped'
    >>> what_is_left({"applied": 3, "verified": 2}) is None
    True
    """
    human = {s: counts.get(s, 0) for s in NEEDS_HUMAN if counts.get(s)}
    parts = []
    if human:
        parts.append(f"{sum(human.values())} need a human ("
                     + ", ".join(f"{n} {s}" for s, n in human.items()) + ")")
    for status in (Status.PENDING, Status.APPLYING, Status.SKIPPED):
        if counts.get(status):
            parts.append(f"{counts[status]} {status}")
    return ", ".join(parts) or None


def counts_sentence(pending: int, verified: int, blocked: int, escalated: int, failed: int) -> str:
    """A plan's counts in this vocabulary, as the approval and the summary say them."""
    return (f"**{pending} {Status.PENDING}** (patched, waiting for their wave), "
            f"{verified} {Status.VERIFIED} (unchanged, checked against the migrated upstream), "
            + (f"{blocked} {Status.BLOCKED} (unchanged, an upstream is not migrated), " if blocked else "")
            + f"**{escalated} {Status.ESCALATED}**, **{failed} {Status.FAILED}** (the dry run refuted the patch).")


def legend() -> str:
    """The vocabulary as a Markdown table (docs, summary)."""
    return "\n".join(["| status | meaning |", "|---|---|",
                      *(f"| {s} | {s.description} |" for s in Status)])
