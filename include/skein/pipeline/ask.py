"""The approval as of the moment it is asked: the frozen plan minus the consumers a person
holds now (skipped or escalated in the portal, ``skein.controls``), and whether the campaign
is paused.

Summarize froze the waves an hour (or a week) before an approver reads them; in between a
person may have escalated the whole canary. So the approval step rebuilds the waves from the
consumers nobody holds (``rebuild_waves``: the canary is made of eligible consumers again),
says what is held, by whom and why, and that the campaign is paused, and offers no wave that
would apply nothing without saying so (``approval_options``).
"""

from __future__ import annotations

from dataclasses import dataclass

from skein.approvals import CAMPAIGN_OPTIONS, OPTION_OF_SCOPE
from skein.audit import Action
from skein.controls import hold_reason, holds, paused
from skein.pipeline.context import RunContext
from skein.plan import Plan
from skein.store import Event


@dataclass(frozen=True)
class AskState:
    """What an approval asked now would apply."""

    waves: dict[str, list[str]]  # wave -> consumers it applies, held ones left out
    held: dict[str, Event]  # consumer of this plan -> the person's hold
    pause: Event | None  # the event that paused the campaign, if it is paused
    planned: dict[str, list[str]]  # the waves as summarize froze them (before this rebuild)

    @property
    def eligible(self) -> int:
        return sum(len(ids) for ids in self.waves.values())


def rebuild_waves(ctx: RunContext, *, write: bool = True) -> AskState:
    """Rebuild waves.json and apply_batches.json (and the consumer index's wave) from the plan
    minus the holds now; a held consumer stays in the last wave's batches, where the apply
    step leaves it out unless a person releases it before that wave starts. ``write=False``:
    only say what they would be. Once a wave of this run has started the waves stay as they
    are (a reassignment could move a consumer into a wave that already ran): only the held
    consumers are left out of what the approval counts."""
    from skein.pipeline.summarize import apply_batches, index_consumers, ordered_waves, waves_without_holds

    plan, report = ctx.files.plan(), ctx.report()
    planned = ctx.files.waves()
    held_now = holds(ctx.store, ctx.campaign_id) if ctx.store is not None else {}
    held = {item.id: held_now[item.id] for item in plan.items if item.id in held_now}
    if ctx.events(Action.WAVE_STARTED):
        waves = planned
    else:
        assigned = waves_without_holds(plan, report, ctx.campaign.rollout.waves, set(held))
        waves = ordered_waves(ctx, assigned)
    if write and waves != planned:
        ctx.files.write_waves(waves)
        ctx.files.write_apply_batches(apply_batches(ctx, waves))
        index_consumers(ctx, plan, assigned)
    eligible = {w: [cid for cid in ids if cid not in held] for w, ids in waves.items()}
    pause = paused(ctx.store, ctx.campaign_id) if ctx.store is not None else None
    return AskState(waves=eligible, held=held, pause=pause, planned=planned)


def without_held(plan: Plan, held: set[str]) -> Plan:
    """The plan without the held consumers, recounted: what an approval may apply.

    >>> from skein.plan import _example_report, plan_items
    >>> plan = plan_items(_example_report(), {})
    >>> without_held(plan, {"r/a.sql"}).counts["unchanged"], len(plan.items)
    (1, 2)
    """
    items = [i for i in plan.items if i.id not in held]
    counts = {status: sum(1 for i in items if i.status == status) for status in plan.counts}
    return plan.model_copy(update={"items": items, "counts": counts})


def approval_options(ctx: RunContext, state: AskState, wave: str | None = None) -> list[str]:
    """The options an approver is offered: "Approve canary only" only when the canary applies
    something (``wave``: a later wave's approval keeps its own options)."""
    from skein.approvals import WAVE_OPTIONS

    if wave is not None:
        return list(WAVE_OPTIONS)
    first = ctx.campaign.rollout.waves[0].name if ctx.campaign.rollout.waves else None
    canary = OPTION_OF_SCOPE["canary"]
    return [o for o in CAMPAIGN_OPTIONS if o != canary or (first and state.waves.get(first))]


def held_markdown(state: AskState, consumer_url=None) -> str:
    """The part of the approval about a person's controls: paused, held consumers, waves that
    were rebuilt or apply nothing. Empty when there is nothing to say.

    >>> print(held_markdown(AskState(waves={"canary": [], "everyone": []}, held={}, pause=None,
    ...                              planned={"canary": ["a"], "everyone": []})))
    **Approving applies nothing now**: no consumer of the plan is eligible (none is held: the plan applies nothing).
    <BLANKLINE>
    <BLANKLINE>
    """
    lines = []
    if state.pause is not None:
        why = state.pause.detail.get("message")
        lines += [f"**The campaign is paused** by {state.pause.actor} since "
                  f"{state.pause.at:%Y-%m-%d %H:%M} UTC" + (f" ({why})" if why else "") + ": a wave "
                  "that starts while it is paused applies nothing and the run ends `paused`; "
                  "resume it in the portal first.", ""]
    if state.held:
        lines += [f"**{len(state.held)} consumer(s) held by a person**: not applied by this run, "
                  "not counted below (release one in the portal to put it back in the last wave):", ""]
        lines += [f"- {_ref(cid, consumer_url)}: {hold_reason(e)}" for cid, e in list(state.held.items())[:20]]
        if len(state.held) > 20:
            lines.append(f"- ... and {len(state.held) - 20} more")
        lines.append("")
    if not state.eligible:
        lines += ["**Approving applies nothing now**: no consumer of the plan is eligible ("
                  + ("every one it would apply is held" if state.held else "none is held: the plan "
                     "applies nothing") + ").", ""]
    else:
        lines += _rebuilt_waves(state)
    return "\n".join(lines) + ("\n" if lines else "")


def _rebuilt_waves(state: AskState) -> list[str]:
    """Lines for each wave whose consumers changed since the plan, or that applies nothing."""
    lines = []
    for wave, ids in state.waves.items():
        before = state.planned.get(wave, [])
        if not ids:
            lines.append(f"- wave `{wave}` applies nothing (its consumers are held)")
        elif set(ids) != set(before):
            lines.append(f"- wave `{wave}` rebuilt from the eligible consumers: {len(ids)} "
                         f"(planned: {len(before)})")
    return ["Waves since the plan:", "", *lines, ""] if lines else []


def _ref(cid: str, consumer_url) -> str:
    return f"[`{cid}`]({consumer_url(cid)})" if consumer_url else f"`{cid}`"


def approval_text(ctx: RunContext, evidence_url: str | None = None, params: dict | None = None,
                  consumer_url=None, state=None) -> str:
    """The approval's Markdown body, from the frozen plan minus what a person holds now (see
    ``skein.evidence``, ``skein.pipeline.ask``). ``evidence_url``: the campaign's live page
    (the portal), else the summary; ``consumer_url``: id -> the consumer's page, for the
    consumers a human must decide on; ``state``: ``rebuild_waves``' answer, when the caller
    rebuilt the waves for this approval (else they are computed, not written)."""
    from skein.evidence import approval_markdown

    state = state or rebuild_waves(ctx, write=False)
    link = evidence_url or str(ctx.files.summary_html)
    record = str(ctx.files.summary_html) if evidence_url else None
    return held_markdown(state, consumer_url) + approval_markdown(
        ctx.campaign, ctx.run_id, without_held(ctx.files.plan(), set(state.held)), ctx.files.summary(),
        state.waves, link, params, consumer_url=consumer_url, record=record)
