"""Step 4, summarize: the plan, its evidence, the waves and the apply batches, frozen.

It reads what discover, rewrite and simulate froze and writes only its own files, so it
can run again (a retried task) without touching theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

from skein.audit import Action
from skein.controls import holds
from skein.pipeline.context import RunContext
from skein.pipeline.live import refresh_summary
from skein.plan import Plan, StatusCounts, applicable, plan_items, plan_waves


@dataclass(frozen=True)
class Summary:
    plan: Plan
    waves: dict[str, list[str]]  # wave -> consumer ids to apply, in order

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.plan.counts)

    @property
    def escalated(self) -> list[str]:
        return [i.id for i in self.plan.with_status("escalated")]

    @property
    def failed(self) -> list[str]:
        return [i.id for i in self.plan.with_status("failed")]


def summarize(ctx: RunContext, simulated: bool = True) -> Summary:
    """Freeze plan.json (and patches), the evidence, waves.json and apply_batches.json.
    ``simulated=False``: ``skein plan --no-simulate``, whose patches are not held back for
    want of a dry run (a run always simulates: a patch without one is escalated)."""
    report, results, simulations = ctx.report(), ctx.results(), ctx.simulations()
    plan = plan_items(report, results, simulations if simulated else None)
    ctx.files.write_plan(plan, results)
    held = set(holds(ctx.store, ctx.campaign_id)) if ctx.store is not None else set()
    assigned = waves_without_holds(plan, report, ctx.campaign.rollout.waves, held)
    _write_evidence(ctx, plan, results, simulations, assigned)
    waves = ordered_waves(ctx, assigned)
    ctx.files.write_waves(waves)
    ctx.files.write_apply_batches(apply_batches(ctx, waves))
    index_consumers(ctx, plan, assigned)
    ctx.record(Action.PLANNED, counts=plan.counts, waves={k: len(v) for k, v in waves.items()})
    refresh_summary(ctx, "the plan")
    return Summary(plan=plan, waves=waves)


def waves_without_holds(plan: Plan, report, waves, held: set[str]) -> dict[str, str]:
    """The wave of every consumer the plan applies, assigned as if the consumers a person
    holds (``held``) were not there, so a canary is never made of held consumers only; the
    held ones go to the last wave, where the apply step leaves them out unless released."""
    eligible = plan.model_copy(update={"items": [i for i in plan.items if i.id not in held]})
    assigned = plan_waves(eligible, report, waves)
    if waves:
        assigned.update({i.id: waves[-1].name for i in plan.items if i.id in held and applicable(i)})
    return assigned


def ordered_waves(ctx: RunContext, assigned: dict[str, str]) -> dict[str, list[str]]:
    """wave -> its consumers in migration order, every wave of the rollout present."""
    order = {c.id: n for n, c in enumerate(ctx.report().consumers)}
    return {w.name: sorted((cid for cid, name in assigned.items() if name == w.name),
                           key=order.__getitem__) for w in ctx.campaign.rollout.waves}


def _write_evidence(ctx: RunContext, plan: Plan, results: dict, simulations: dict,
                    waves: dict[str, str]) -> None:
    """``evidence/<id>.{json,md,html}`` per consumer and ``summary.{json,md,html}``."""
    from skein.statuses import of_plan
    from skein.evidence import (consumer_markdown, consumer_record, html_page, plan_notes,
                                status_sentence, summary_counts, summary_markdown)

    impacted = {c.id: c for c in ctx.report().consumers}
    records = []
    for item in plan.items:
        record = consumer_record(item, impacted[item.id], results.get(item.id),
                                 simulations.get(item.id), waves.get(item.id))
        records.append(record)
        markdown = consumer_markdown(record)
        ctx.files.write_evidence(item.id, record, markdown, html_page(item.id, markdown))
    wave_order = [w.name for w in ctx.campaign.rollout.waves]
    # the summary speaks the one vocabulary (skein.statuses); each evidence record keeps the plan's
    records = [{**r, "status": str(of_plan(r["status"], (r.get("simulation") or {}).get("status")))}
               for r in records]
    by_wave = {w: [cid for cid, name in waves.items() if name == w] for w in wave_order}
    markdown = summary_markdown(plan.campaign, records, wave_order,
                                [status_sentence(plan, by_wave), *plan_notes(plan, by_wave)])
    counts = StatusCounts(campaign=plan.campaign, **summary_counts(records, wave_order))
    ctx.files.write_summary(counts, markdown,
                            html_page(plan.campaign, markdown.replace(".md)", ".html)")))


def index_consumers(ctx: RunContext, plan: Plan, waves: dict[str, str]) -> None:
    """The plan's consumers as rows of the store's ``skein_consumers``, so the portal pages and
    filters them with SQL (``skein.views``); nothing for ``skein plan``, which has no store."""
    if ctx.store is None:
        return
    from skein.pipeline.apply import repository_of

    impacted, by_id = {c.id: c for c in ctx.report().consumers}, ctx.catalog().by_id()
    rows = []
    for item in plan.items:
        found, repo = impacted[item.id], repository_of(by_id[item.id])
        rows.append({"consumer": item.id, "seq": item.order, "owner": found.owner,
                     "tier": found.tier, "kind": found.kind, "impact": found.impact,
                     "wave": waves.get(item.id), "plan_status": item.status, "reason": item.reason,
                     "agent": item.agent, "changes": item.changes, "simulation": item.simulation,
                     "repo": str(repo) if repo else None, "path": found.path if repo else None})
    ctx.store.index_consumers(ctx.campaign_id, ctx.run_id, rows)


def apply_batches(ctx: RunContext, waves: dict[str, list[str]]) -> dict[str, dict[str, list[list[str]]]]:
    """wave -> apply group -> batches of consumer ids, for the mapped apply tasks (every
    group of ``skein.rollout.apply_groups`` is present, maybe empty)."""
    from skein.batches import MIN_APPLY, batch_size, chunk
    from skein.rollout import apply_groups, group_of

    fleet = ctx.campaign.fleet
    by_id = ctx.catalog().by_id()
    out: dict[str, dict[str, list[list[str]]]] = {}
    for wave, ids in waves.items():
        grouped: dict[str, list[str]] = {g: [] for g in apply_groups(fleet)}
        for cid in ids:
            ownership = by_id[cid].ownership
            grouped[group_of(getattr(ownership, "region", None), getattr(ownership, "tier", None),
                             fleet)].append(cid)
        size = batch_size(len(ids), fleet.batch_size, minimum=MIN_APPLY)
        out[wave] = {g: chunk(members, size) for g, members in grouped.items()}
    return out
