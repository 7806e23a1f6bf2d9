"""Step 2, rewrite: the rule agent, then the LLM agent (when the campaign enables it) for
what the rules escalate. Both pass the same gate (``skein.agents.gate``)."""

from __future__ import annotations

from skein.audit import Action
from skein.errors import first_line
from skein.pipeline.context import RunContext
from skein.rewrite.request import Escalation, Patch, Unchanged
from skein.spec import Campaign
from skein.store import sha256


def rewrite_consumers(ctx: RunContext, ids: list[str], llm_model=None) -> dict[str, str]:
    """Rewrite each consumer of ``ids`` that discovery marked ``rewrite``; returns
    id -> patched | escalated | unchanged (it does not read the source). ``llm_model`` (a pydantic-ai model or name) overrides
    ``agents.llm.model``; the LLM agent only runs when the campaign enables it."""
    from skein.agents.requests import request_for
    from skein.agents.rule import rewrite

    catalog = ctx.catalog()
    by_id, statuses = catalog.by_id(), {c.id: c.status for c in ctx.report().consumers}
    llm = llm_agent(ctx.campaign, llm_model)
    out = {}
    todo = [cid for cid in ids if statuses.get(cid) == "rewrite"]
    for number, cid in enumerate(todo):
        ctx.progress("rewrite", number, len(todo), cid)
        request = request_for(ctx.campaign, catalog, by_id[cid])
        try:
            result = rewrite(request)
        except Exception as exc:  # noqa: BLE001 - one consumer's failure is only its own
            result = Escalation(consumer_id=cid, agent="rule", reason=(
                f"the rewriter failed ({type(exc).__name__}: {exc}): a Skein bug, please "
                "report it with this consumer"))
        if isinstance(result, Escalation) and llm is not None:
            hint = result.reason
            result, attempts = llm.rewrite(request, hint=hint)
            ctx.files.write_transcript(cid, llm.evidence(result, attempts, hint=hint))
        ctx.files.write_agent_result(cid, result)
        out[cid] = record_result(ctx, cid, request.text, result)
    return out


def record_result(ctx: RunContext, cid: str, original: str,
                  result: Patch | Escalation | Unchanged) -> str:
    """Audit an agent's result; returns patched | escalated | unchanged. Unchanged is not an
    audit event: nothing was decided about the consumer (the apply step records it as
    ``verified`` once its dry run passed), and it must count nowhere as escalated."""
    if isinstance(result, Unchanged):
        return "unchanged"
    before = sha256(original.encode("utf-8"))
    if isinstance(result, Patch):
        ctx.record(Action.PATCHED, consumer=cid, before=before, after=sha256(result.text.encode()),
                   agent=result.agent, changes=len(result.changes))
        return "patched"
    ctx.record(Action.ESCALATED, consumer=cid, before=before, agent=result.agent,
               message=result.reason)
    return "escalated"


def llm_agent(campaign: Campaign, model=None):
    """The campaign's LLM agent, or None when it is not enabled. Its gate dry-runs each
    proposal on samples of the warehouse, read only if a proposal gets that far."""
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

    from pydantic_ai.exceptions import UserError

    try:
        return LLMAgent(model, gate=default_gate(WarehouseSamples(campaign)), attempts=settings.attempts)
    except (ImportError, UserError) as exc:  # the provider's package or key is missing here
        raise campaign.error(f"cannot use model {str(model)!r} here: {first_line(exc)}",
                             "agents", "llm", "model") from None
