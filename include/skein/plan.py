"""``skein plan``: discovery, then an agent per impacted consumer; frozen results on disk.

The plan is data (SQLMesh style): what each consumer gets (a patch, an escalation, or
nothing because only its upstream changes), in migration order. Simulation adds its
evidence to the same directory in a later stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from skein.rewrite.request import Escalation, Patch
from skein.agents.requests import request_for
from skein.agents.rule import rewrite
from skein.catalog import Catalog, build_catalog
from skein.discovery import DiscoveryReport, assess_impact, check_against_catalog, connect
from skein.evidence import write_evidence
from skein.spec import Campaign


class PlanItem(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    order: int
    impact: str
    status: str  # patched | escalate | unchanged | failed (the simulation refuted the patch)
    agent: str | None
    reason: str | None
    patch_file: str | None
    changes: int
    simulation: str | None = None  # pass | fail | error | skipped
    simulation_reason: str | None = None


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)
    campaign: str
    items: list[PlanItem]
    counts: dict[str, int]


class Built(NamedTuple):
    report: DiscoveryReport
    results: dict[str, Patch | Escalation]
    evidence: dict[str, str]  # consumer id -> the LLM agent's evidence (JSON)
    catalog: Catalog


def build_plan(campaign: Campaign, workers: int | None = None, llm_model=None) -> Built:
    """``llm_model`` (a pydantic-ai model or name) overrides ``agents.llm.model``; the LLM
    agent only runs when the campaign enables it. ``simulate_plan`` dry-runs the result."""
    warehouse = connect(campaign)
    check_against_catalog(campaign, warehouse.schemas())
    catalog = build_catalog(campaign, warehouse, workers)
    report = assess_impact(campaign, catalog)
    by_id = catalog.by_id()
    results: dict[str, Patch | Escalation] = {}
    evidence: dict[str, str] = {}  # consumer id -> the LLM agent's evidence (JSON)
    llm = _llm_agent(campaign, llm_model)
    for item in report.consumers:
        if item.status != "rewrite":
            continue
        request = request_for(campaign, catalog, by_id[item.id])
        result = rewrite(request)
        if isinstance(result, Escalation) and llm is not None:
            hint = result.reason
            result, attempts = llm.rewrite(request, hint=hint)
            evidence[item.id] = llm.evidence(result, attempts, hint=hint).to_json()
        results[item.id] = result
    return Built(report, results, evidence, catalog)


def simulate_plan(campaign: Campaign, built: Built) -> dict:
    """Dry-run every patch (and its downstream) on the warehouse's data."""
    from skein.simulation.simulate import simulate

    return simulate(campaign, built.catalog, built.report, built.results)


def retry_refuted(campaign: Campaign, built: Built, simulations: dict, llm_model=None
                  ) -> tuple[Built, dict]:
    """Patches the dry run refuted go back to the LLM agent (when the campaign enables it),
    with the simulation's verdict as the hint; then everything is simulated again."""
    llm = _llm_agent(campaign, llm_model)
    refuted = [cid for cid, sim in simulations.items()
               if sim.status in ("fail", "error") and isinstance(built.results.get(cid), Patch)]
    if llm is None or not refuted:
        return built, simulations
    by_id = built.catalog.by_id()
    for cid in refuted:
        sim = simulations[cid]
        hint = f"a patch failed its dry run on data ({sim.status}): {sim.reason}"
        if sim.samples:
            hint += f"; first differing rows: {json.dumps(sim.samples[:3], default=str)}"
        result, attempts = llm.rewrite(request_for(campaign, built.catalog, by_id[cid]), hint=hint)
        built.results[cid] = result
        built.evidence[cid] = llm.evidence(result, attempts, hint=hint).to_json()
    return built, simulate_plan(campaign, built)


def _llm_agent(campaign: Campaign, model):
    settings = campaign.agents.llm
    if not settings.enabled:
        return None
    model = model if model is not None else settings.model
    if model is None:
        raise campaign.error("the LLM agent is enabled but no model is configured "
                             "(set agents.llm.model, or run in Airflow with a pydanticai connection)",
                             "agents", "llm", "model")
    from skein.agents.gate import default_gate
    from skein.agents.llm import LLMAgent
    from skein.simulation.worlds import WarehouseSamples

    # The dry run reads the warehouse's samples only if an answer reaches it.
    return LLMAgent(model, gate=default_gate(WarehouseSamples(campaign)), attempts=settings.attempts)


def plan_items(report: DiscoveryReport, results: dict[str, Patch | Escalation],
               simulations: dict | None = None) -> Plan:
    items = [_with_simulation(item, (simulations or {}).get(item.id))
             for item in _agent_items(report, results)]
    counts = {s: sum(1 for i in items if i.status == s)
              for s in ("patched", "escalate", "unchanged", "failed")}
    return Plan(campaign=report.campaign, items=items, counts=counts)


def _with_simulation(item: PlanItem, simulation) -> PlanItem:
    if simulation is None:
        return item
    update = {"simulation": simulation.status, "simulation_reason": simulation.reason}
    if simulation.status in ("fail", "error") and item.status in ("patched", "unchanged"):
        # Never applied: back to the LLM agent or a human, with the evidence.
        update.update(status="failed", reason=f"simulation {simulation.status}: {simulation.reason}")
    return item.model_copy(update=update)


def _agent_items(report: DiscoveryReport, results: dict[str, Patch | Escalation]) -> list[PlanItem]:
    items = []
    for c in report.consumers:
        result = results.get(c.id)
        if isinstance(result, Patch):
            items.append(PlanItem(id=c.id, order=c.order, impact=c.impact, status="patched",
                                  agent=result.agent, reason=None, changes=len(result.changes),
                                  patch_file=f"patches/{_file_name(c.id)}.diff"))
        elif isinstance(result, Escalation) or c.status == "escalate":
            reason = result.reason if isinstance(result, Escalation) else c.reason
            items.append(PlanItem(id=c.id, order=c.order, impact=c.impact, status="escalate",
                                  agent=result.agent if result else None, reason=reason,
                                  patch_file=None, changes=0))
        else:
            items.append(PlanItem(id=c.id, order=c.order, impact=c.impact, status="unchanged",
                                  agent=None, patch_file=None, changes=0,
                                  reason="its upstream keeps its output columns; verified, not patched"))
    return items


def write_plan(out: Path, report: DiscoveryReport, results: dict[str, Patch | Escalation],
               evidence: dict[str, str] | None = None, simulations: dict | None = None,
               waves=None) -> Plan:
    plan = plan_items(report, results, simulations)
    if simulations:
        (out / "simulation").mkdir(parents=True, exist_ok=True)
        for cid, simulation in simulations.items():
            (out / "simulation" / f"{_file_name(cid)}.json").write_text(
                simulation.model_dump_json(indent=2) + "\n", encoding="utf-8")
    for cid, record in (evidence or {}).items():
        (out / "llm").mkdir(parents=True, exist_ok=True)
        (out / "llm" / f"{_file_name(cid)}.json").write_text(record + "\n", encoding="utf-8")
    (out / "patches").mkdir(parents=True, exist_ok=True)
    (out / "patched").mkdir(parents=True, exist_ok=True)
    for cid, result in results.items():
        if isinstance(result, Patch):
            name = _file_name(cid)
            (out / "patches" / f"{name}.diff").write_text(result.diff, encoding="utf-8")
            (out / "patched" / name).write_text(result.text, encoding="utf-8")
    (out / "discovery.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (out / "plan.json").write_text(plan.model_dump_json(indent=2) + "\n", encoding="utf-8")
    patches = {cid: json.loads(r.model_dump_json()) for cid, r in results.items()}
    (out / "agents.json").write_text(json.dumps(patches, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_evidence(out, plan, report, results, simulations, plan_waves(plan, report, waves))
    return plan


def plan_waves(plan: Plan, report: DiscoveryReport, waves) -> dict[str, str]:
    """The wave of every consumer the plan would apply (patched, or unchanged and verified)."""
    if not waves:
        return {}
    from skein.rollout import assign_waves

    applied = {i.id for i in plan.items if i.status == "patched" or
               (i.status == "unchanged" and i.simulation in (None, "pass"))}
    return assign_waves([c for c in report.consumers if c.id in applied], waves)


def _file_name(consumer_id: str) -> str:
    """A flat, readable file name for a consumer id (``repo/models/x.sql`` -> ``repo__models__x.sql``)."""
    return consumer_id.replace("/", "__")
