"""The plan: what each impacted consumer gets, as frozen data (SQLMesh style).

A plan item is a patch, an escalation to a human, nothing (only its upstream changes), or a
failure (the dry run refuted the patch), in migration order. ``plan_items`` builds it from
discovery, the agents' results and the simulations; ``skein.pipeline.summarize`` freezes it
in the run directory.

>>> from skein.rewrite.request import Escalation
>>> report = _example_report()
>>> plan = plan_items(report, {"r/a.sql": Escalation(consumer_id="r/a.sql", agent="rule",
...                                                  reason="uses legacy_flag")})
>>> [(i.id, i.status) for i in plan.items], plan.counts["escalated"]
([('r/a.sql', 'escalated'), ('r/b.sql', 'unchanged')], 1)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from skein.discovery import DiscoveryReport
from skein.rewrite.request import Escalation, Patch, Unchanged
from skein.simulation.simulate import SimulationStatus

PlanStatus = Literal["patched", "escalated", "unchanged", "failed"]
PLAN_STATUSES: tuple[PlanStatus, ...] = ("patched", "escalated", "unchanged", "failed")

UNCHANGED_REASON = "its upstream changes but keeps its output columns: verified, not patched"


class PlanItem(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    order: int
    impact: str
    status: PlanStatus  # failed: the simulation refuted the patch (or the unchanged code)
    agent: str | None
    reason: str | None
    patch_file: str | None
    changes: int
    simulation: SimulationStatus | None = None
    simulation_reason: str | None = None
    discovery_status: str | None = None  # what discovery decided (rewrite | escalate | verify)
    not_dry_run: bool = False  # escalated: a patch whose dry run did not run (never applied)


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)
    campaign: str
    items: list[PlanItem]
    counts: dict[PlanStatus, int]

    def with_status(self, *statuses: PlanStatus) -> list[PlanItem]:
        return [i for i in self.items if i.status in statuses]

    def not_dry_run(self) -> list[PlanItem]:
        """Patches escalated because their dry run did not run: no wave applies them, a
        person decides (the approval lists them)."""
        return [i for i in self.items if i.not_dry_run]

    def not_patched_after_all(self) -> list[PlanItem]:
        """Consumers discovery sent to the rewriter that did not end patched: the agent
        escalated them, or the dry run refuted the patch (why "22 rewrite" became "20 patched")."""
        return [i for i in self.items if i.discovery_status == "rewrite" and i.status != "patched"]

    def unchanged_split(self, waves: dict[str, list[str]]) -> tuple[int, int]:
        """(verified, left): unchanged consumers in a wave (checked against their migrated
        upstream, in the waves' counts) and those left out (an upstream is not migrated)."""
        in_waves = {cid for ids in waves.values() for cid in ids}
        unchanged = [i.id for i in self.with_status("unchanged")]
        verified = sum(1 for cid in unchanged if cid in in_waves)
        return verified, len(unchanged) - verified


class StatusCounts(BaseModel):
    """summary.json: the plan's consumers counted by status, per owner and per wave."""

    model_config = ConfigDict(frozen=True)
    campaign: str
    by_status: dict[str, int]
    by_owner: dict[str, dict[str, int]]
    by_wave: dict[str, dict[str, int]]


def plan_items(report: DiscoveryReport, results: dict[str, Patch | Escalation],
               simulations: dict | None = None) -> Plan:
    """The plan of a discovery report, the agents' results and (optionally) the simulations."""
    from skein.paths import file_name

    items = []
    for c in report.consumers:
        result = results.get(c.id)
        common = {"id": c.id, "order": c.order, "impact": c.impact, "discovery_status": c.status}
        if isinstance(result, Patch):
            item = PlanItem(**common, status="patched", agent=result.agent, reason=None,
                            changes=len(result.changes),
                            patch_file=f"patches/{file_name(c.id)}.diff")
        elif isinstance(result, Escalation) or c.status == "escalate":
            item = PlanItem(**common, status="escalated",
                            agent=result.agent if result else None,
                            reason=result.reason if isinstance(result, Escalation) else c.reason,
                            patch_file=None, changes=0)
        elif isinstance(result, Unchanged):  # the rule agent found no reference to the source
            item = PlanItem(**common, status="unchanged", agent=result.agent, patch_file=None,
                            changes=0, reason=result.reason)
        else:
            item = PlanItem(**common, status="unchanged", agent=None, patch_file=None, changes=0,
                            reason=UNCHANGED_REASON)
        item = _with_simulation(item, (simulations or {}).get(c.id))
        items.append(item if simulations is None else _dry_run_or_escalated(item))
    counts = {s: sum(1 for i in items if i.status == s) for s in PLAN_STATUSES}
    return Plan(campaign=report.campaign, items=items, counts=counts)


def _with_simulation(item: PlanItem, simulation) -> PlanItem:
    if simulation is None:
        return item
    update = {"simulation": simulation.status, "simulation_reason": simulation.reason}
    if simulation.status in ("fail", "error") and item.status in ("patched", "unchanged"):
        # Never applied: back to the LLM agent or a human, with the evidence.
        update.update(status="failed", reason=f"simulation {simulation.status}: {simulation.reason}")
    elif simulation.status == "skipped" and item.status == "unchanged":
        # Its upstream was escalated: it cannot be verified, so it is not applied either.
        update.update(reason=f"not verified: {simulation.reason}")
    return item.model_copy(update=update)


NOT_DRY_RUN = "not dry-run"


def _dry_run_or_escalated(item: PlanItem) -> PlanItem:
    """A patch is applied only after its dry run passed: one whose dry run did not run (its
    upstream is not migrated, or it was never simulated) goes to a person, never to a wave.

    >>> item = PlanItem(id="r/b.sql", order=2, impact="direct", status="patched", agent="rule",
    ...                 reason=None, patch_file="patches/r__b.sql.diff", changes=1,
    ...                 simulation="skipped", simulation_reason="upstream a.v is not migrated")
    >>> escalated = _dry_run_or_escalated(item)
    >>> escalated.status, escalated.not_dry_run, escalated.reason
    ('escalated', True, 'not dry-run (upstream a.v is not migrated): a person applies it by hand, or a later run once its upstream is migrated')
    """
    if item.status != "patched" or item.simulation == "pass":
        return item
    why = item.simulation_reason if item.simulation is not None else "no dry run result"
    return item.model_copy(update={
        "status": "escalated", "not_dry_run": True,
        "reason": f"{NOT_DRY_RUN} ({why}): a person applies it by hand, or a later run once "
                  "its upstream is migrated"})


def applicable(item: PlanItem) -> bool:
    """Whether a wave applies the item: a patch, or unchanged code the dry run verified."""
    return item.status == "patched" or (item.status == "unchanged" and item.simulation in (None, "pass"))


def plan_waves(plan: Plan, report: DiscoveryReport, waves) -> dict[str, str]:
    """The wave of every consumer the plan would apply (see ``applicable``)."""
    if not waves:
        return {}
    from skein.rollout import assign_waves

    applied = {i.id for i in plan.items if applicable(i)}
    return assign_waves([c for c in report.consumers if c.id in applied], waves)


def _example_report() -> DiscoveryReport:
    """Two consumers: ``r/a.sql`` reads the source, ``r/b.sql`` reads what a.sql produces."""
    from skein.discovery import ImpactedConsumer

    def consumer(cid, order, status, impact, upstream):
        return ImpactedConsumer(id=cid, kind="sql_file", repo="r", path=cid[2:], dialect="duckdb",
                                owner="team", tier=None, lifecycle=None, impact=impact, level=order,
                                order=order, status=status, reason=None, columns=[], references=[],
                                produces=None, upstream=upstream)

    return DiscoveryReport(campaign="demo", source="a.p", target="b.p", scanned=2,
                           consumers=[consumer("r/a.sql", 1, "rewrite", "direct", []),
                                      consumer("r/b.sql", 2, "verify", "transitive", ["r/a.sql"])],
                           counts={"rewrite": 1, "verify": 1}, derived_datasets={}, unparseable=[],
                           problems=[])
