"""Step 3, simulate: dry-run every patch of a batch on data, and send what the dry run
refutes back to the LLM agent (when the campaign enables it) with the verdict as the hint;
then the batch is simulated again. Only the final verdicts are kept in ``simulation/``;
the agent's second answer in ``retry/``, its transcript in ``llm/<id>.retry.json``."""

from __future__ import annotations

import json

from skein.audit import Action
from skein.pipeline.context import RunContext
from skein.pipeline.rewrite import llm_agent, record_result
from skein.rewrite.request import Patch
from skein.rundir import Retry


def simulate_consumers(ctx: RunContext, ids: list[str], llm_model=None) -> dict[str, str]:
    """Dry-run the batch ``ids`` (whole dependency components, see ``work_batches``);
    returns id -> pass | fail | error | skipped."""
    from skein.simulation.simulate import simulate

    report = ctx.report()
    wanted = set(ids)
    batch = report.model_copy(update={"consumers": [c for c in report.consumers if c.id in wanted]})
    results = ctx.files.results(ids)
    def step(name):
        return lambda done, total, cid: ctx.progress(name, done, total, cid)

    simulations = simulate(ctx.campaign, ctx.catalog(), batch, results, step("simulate"))
    retried = _retry_refuted(ctx, simulations, results, llm_model)
    if retried:
        simulations = simulate(ctx.campaign, ctx.catalog(), batch, results | retried,
                               step("simulate again"))
    for cid, simulation in simulations.items():
        ctx.files.write_simulation(cid, simulation)
    ctx.record(Action.SIMULATED, counts=_counts(s.status for s in simulations.values()),
               consumers=len(simulations), retried=sorted(retried))
    return {cid: s.status for cid, s in simulations.items()}


def refuted_hint(simulation) -> str:
    """What the LLM agent is told about a patch the dry run refuted.

    >>> from types import SimpleNamespace as S
    >>> refuted_hint(S(status="fail", reason="rows differ", samples=[{"k": 1}]))
    'a patch failed its dry run on data (fail): rows differ; first differing rows: [{"k": 1}]'
    """
    hint = f"a patch failed its dry run on data ({simulation.status}): {simulation.reason}"
    if simulation.samples:
        hint += f"; first differing rows: {json.dumps(simulation.samples[:3], default=str)}"
    return hint


def _retry_refuted(ctx: RunContext, simulations: dict, results: dict, llm_model) -> dict:
    """The LLM agent's new answer for each refuted patch (none without the LLM agent)."""
    refuted = [cid for cid, sim in simulations.items()
               if sim.status in ("fail", "error") and isinstance(results.get(cid), Patch)]
    llm = llm_agent(ctx.campaign, llm_model) if refuted else None
    if llm is None:
        return {}
    from skein.agents.requests import request_for

    catalog = ctx.catalog()
    by_id = catalog.by_id()
    out = {}
    for number, cid in enumerate(refuted):
        ctx.progress("retry with the LLM agent", number, len(refuted), cid)
        hint = refuted_hint(simulations[cid])
        request = request_for(ctx.campaign, catalog, by_id[cid])
        result, attempts = llm.rewrite(request, hint=hint)
        ctx.files.write_transcript(cid, llm.evidence(result, attempts, hint=hint), retry=True)
        ctx.files.write_retry(cid, Retry(result=result, refuted_by=hint))
        ctx.record(Action.RETRIED, consumer=cid, message=hint)
        record_result(ctx, cid, request.text, result)
        out[cid] = result
    return out


def _counts(values) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(values))
