"""A campaign run as steps: discover, agents, simulate, summarize, apply, monitor, rollback,
finalize. Airflow renders each step as a task (``plugins/skein_airflow``); ``skein run`` calls
them in a loop. Neither holds state: a step reads what earlier steps froze in the run
directory and the campaign store, and writes its own results there. So any step can be
retried, and a run killed half way continues where it stopped.

Run directory ``<skein home>/runs/<campaign>/<run id>/``:
``campaign.yaml`` (a copy of the spec as the run started, for the record), ``catalog.pkl``, ``discovery.json``,
``agents/<id>.json``, ``simulation/<id>.json``, then the plan as ``skein plan`` writes it
(``plan.json``, ``patches/``, ``evidence/``, ``summary.*``) and ``waves.json``.
"""

from __future__ import annotations

import fnmatch
import json
import pickle
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter

from skein.rewrite.request import Escalation, Patch
from skein.apply import ApplyError, Target, applier_for
from skein.catalog import Catalog, Consumer
from skein.discovery import DiscoveryReport
from skein.plan import _file_name
from skein.spec import Campaign, Wave, load_campaign
from skein.store import CampaignStore, Event, sha256, skein_home

_RESULT = TypeAdapter(Patch | Escalation)


@dataclass
class RunContext:
    """Where one run of one campaign keeps its frozen data; ``actor`` names who acts
    (``task:<task id>``, ``user:<id>``, ``cli``) in the audit log."""

    campaign: Campaign
    run_id: str
    store: CampaignStore
    directory: Path
    actor: str = "cli"
    _cache: dict = field(default_factory=dict, repr=False)

    def record(self, action: str, **kwargs) -> int:
        return self.store.record(self.campaign.campaign, self.run_id, self.actor, action, **kwargs)

    # --- frozen data of earlier steps ------------------------------------------------
    def catalog(self) -> Catalog:
        if "catalog" not in self._cache:
            with open(self.directory / "catalog.pkl", "rb") as handle:
                # Written by this run's discover step, inside Skein's own home: trusted.
                self._cache["catalog"] = pickle.load(handle)  # noqa: S301
        return self._cache["catalog"]

    def report(self) -> DiscoveryReport:
        if "report" not in self._cache:
            self._cache["report"] = DiscoveryReport.model_validate_json(
                (self.directory / "discovery.json").read_text(encoding="utf-8"))
        return self._cache["report"]

    def results(self) -> dict[str, Patch | Escalation]:
        return self._per_consumer("agents", _RESULT.validate_json)

    def simulations(self) -> dict:
        from skein.simulation.simulate import Simulation

        return self._per_consumer("simulation", Simulation.model_validate_json)

    def _per_consumer(self, folder: str, parse) -> dict:
        """``<folder>/<consumer>.json`` of every consumer of the report that has one."""
        out = {}
        for item in self.report().consumers:
            path = self.directory / folder / f"{_file_name(item.id)}.json"
            if path.is_file():
                out[item.id] = parse(path.read_text(encoding="utf-8"))
        return out

    def waves(self) -> dict[str, list[str]]:
        return json.loads((self.directory / "waves.json").read_text(encoding="utf-8"))

    def wave(self, name: str) -> Wave:
        for wave in self.campaign.rollout.waves:
            if wave.name == name:
                return wave
        raise KeyError(name)


def run_directory(campaign_id: str, run_id: str, home: Path | None = None) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in run_id)
    return (home or skein_home()) / "runs" / campaign_id / safe


def start_run(campaign_file: str | Path, run_id: str, *, store: CampaignStore | None = None,
              home: Path | None = None, actor: str = "cli") -> RunContext:
    """Open (or reopen, after a crash) the run; the first start keeps a copy of the spec."""
    campaign = load_campaign(campaign_file)
    directory = run_directory(campaign.campaign, run_id, home)
    frozen = directory / "campaign.yaml"
    if not frozen.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = frozen.with_suffix(".tmp")
        shutil.copyfile(campaign.path, tmp)
        tmp.replace(frozen)
    return RunContext(campaign=campaign, run_id=run_id, store=store or CampaignStore(),
                      directory=directory, actor=actor)


# --- discover ------------------------------------------------------------------------

def discover_step(ctx: RunContext, consumer_filter: str | None = None, workers: int | None = None
                  ) -> list[str]:
    """Discovery and the catalog, frozen for the later steps; returns the ids agents and
    simulation work on (impacted consumers, optionally only those matching the filter, plus
    the upstream they need)."""
    from skein.catalog import build_catalog
    from skein.discovery import assess_impact, check_against_catalog, connect

    campaign = ctx.campaign
    warehouse = connect(campaign)
    check_against_catalog(campaign, warehouse.schemas())
    catalog = build_catalog(campaign, warehouse, workers)
    report = assess_impact(campaign, catalog)
    if consumer_filter:
        report = _filtered(report, consumer_filter)
    _write_atomic(ctx.directory / "catalog.pkl", pickle.dumps(catalog))
    _write_atomic(ctx.directory / "discovery.json", report.model_dump_json(indent=2).encode())
    ctx._cache.clear()
    ctx.record("discovered", **{"counts": dict(report.counts), "consumers": len(report.consumers),
                                "filter": consumer_filter})
    return [c.id for c in report.consumers]


def _filtered(report: DiscoveryReport, pattern: str) -> DiscoveryReport:
    """Consumers matching ``pattern`` (fnmatch on the id) and the upstream they read."""
    by_id = {c.id: c for c in report.consumers}
    keep = {c.id for c in report.consumers if fnmatch.fnmatch(c.id, pattern)}
    frontier = list(keep)
    while frontier:
        for up in by_id[frontier.pop()].upstream:
            if up in by_id and up not in keep:
                keep.add(up)
                frontier.append(up)
    consumers = [c for c in report.consumers if c.id in keep]
    counts = {s: sum(1 for c in consumers if c.status == s) for s in report.counts}
    return report.model_copy(update={"consumers": consumers, "counts": counts})


def work_batches(ctx: RunContext) -> list[list[str]]:
    """Units of work for the agents and the simulation (see ``skein.batches``)."""
    from skein.batches import batch_size, plan_batches

    items = ctx.report().consumers
    return plan_batches(items, batch_size(len(items), ctx.campaign.fleet.batch_size))


# --- agents --------------------------------------------------------------------------

def agents_step(ctx: RunContext, ids: list[str], llm_model=None) -> dict[str, str]:
    """Rewrite each consumer discovery marked ``rewrite`` (rule agent, then the LLM agent when
    the campaign enables it); returns id -> patched | escalate."""
    from skein.agents.requests import request_for
    from skein.agents.rule import rewrite
    from skein.plan import _llm_agent

    catalog, report = ctx.catalog(), ctx.report()
    by_id, statuses = catalog.by_id(), {c.id: c.status for c in report.consumers}
    llm = _llm_agent(ctx.campaign, llm_model)
    out = {}
    for cid in ids:
        if statuses.get(cid) != "rewrite":
            continue
        request = request_for(ctx.campaign, catalog, by_id[cid])
        result = rewrite(request)
        if isinstance(result, Escalation) and llm is not None:
            result, attempts = llm.rewrite(request, hint=result.reason)
            _write_atomic(ctx.directory / "llm" / f"{_file_name(cid)}.json",
                          llm.evidence(result, attempts, hint=None).to_json().encode())
        _write_atomic(ctx.directory / "agents" / f"{_file_name(cid)}.json",
                      result.model_dump_json(indent=2).encode())
        before = sha256(request.text.encode("utf-8"))
        if isinstance(result, Patch):
            ctx.record("patched", consumer=cid, before=before, after=sha256(result.text.encode()),
                       agent=result.agent, changes=len(result.changes))
            out[cid] = "patched"
        else:
            ctx.record("escalated", consumer=cid, before=before, agent=result.agent,
                       message=result.reason)
            out[cid] = "escalate"
    return out


# --- simulate ------------------------------------------------------------------------

def simulate_step(ctx: RunContext, ids: list[str]) -> dict[str, str]:
    """Dry-run the batch (whole dependency components, see ``work_batches``); returns
    id -> pass | fail | error | skipped."""
    from skein.simulation.simulate import simulate

    report = ctx.report()
    wanted = set(ids)
    sub = report.model_copy(update={"consumers": [c for c in report.consumers if c.id in wanted]})
    simulations = simulate(ctx.campaign, ctx.catalog(), sub, ctx.results())
    for cid, simulation in simulations.items():
        _write_atomic(ctx.directory / "simulation" / f"{_file_name(cid)}.json",
                      simulation.model_dump_json(indent=2).encode())
    ctx.record("simulated", counts=_count(s.status for s in simulations.values()),
               consumers=len(simulations))
    return {cid: s.status for cid, s in simulations.items()}


# --- summarize -----------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    waves: dict[str, list[str]]  # wave -> consumer ids to apply, in order
    escalated: list[str]
    failed: list[str]


def summarize_step(ctx: RunContext) -> Summary:
    """The plan and its evidence (as ``skein plan`` writes them) and the waves."""
    from skein.plan import write_plan

    report, results, simulations = ctx.report(), ctx.results(), ctx.simulations()
    plan = write_plan(ctx.directory, report, results, None, simulations, ctx.campaign.rollout.waves)
    assigned = _assigned_waves(ctx, plan, report)
    order = {c.id: n for n, c in enumerate(report.consumers)}
    waves = {w.name: sorted((cid for cid, name in assigned.items() if name == w.name),
                            key=order.__getitem__) for w in ctx.campaign.rollout.waves}
    _write_atomic(ctx.directory / "waves.json", json.dumps(waves, indent=2).encode())
    escalated = [i.id for i in plan.items if i.status == "escalate"]
    failed = [i.id for i in plan.items if i.status == "failed"]
    ctx.record("planned", counts=plan.counts, waves={k: len(v) for k, v in waves.items()})
    return Summary(counts=dict(plan.counts), waves=waves, escalated=escalated, failed=failed)


def _assigned_waves(ctx: RunContext, plan, report) -> dict[str, str]:
    from skein.plan import plan_waves

    return plan_waves(plan, report, ctx.campaign.rollout.waves)


def approval_markdown(ctx: RunContext, evidence_url: str | None = None, params: dict | None = None) -> str:
    """What an approver reads: counts, waves, failures, escalations, the per-owner table, and
    the trigger's params that change what happens (an approver must see a raised threshold)."""
    summary = json.loads((ctx.directory / "summary.json").read_text(encoding="utf-8"))
    plan = json.loads((ctx.directory / "plan.json").read_text(encoding="utf-8"))
    waves = ctx.waves()
    link = evidence_url or str(ctx.directory / "summary.html")
    c = plan["counts"]
    lines = [f"## {ctx.campaign.title}",
             f"`{ctx.campaign.source}` -> `{ctx.campaign.target}`, run `{ctx.run_id}`.", "",
             f"**{c.get('patched', 0)} patched**, {c.get('unchanged', 0)} verified unchanged, "
             f"**{c.get('escalate', 0)} escalated**, **{c.get('failed', 0)} failed simulation**.", "",
             "| wave | consumers | soak | threshold |", "|---|---|---|---|"]
    params = params or {}
    override = params.get("error_threshold")
    for wave in ctx.campaign.rollout.waves:
        threshold = wave.error_threshold if wave.error_threshold is not None else ctx.campaign.rollout.error_threshold
        threshold = override if override is not None else threshold
        lines.append(f"| {wave.name} | {len(waves.get(wave.name, []))} | {wave.soak_minutes:g} min | "
                     f"{threshold:.0%} |")
    chosen = [f"{name} = `{params[name]}`" for name in ("waves", "error_threshold", "consumers")
              if params.get(name) is not None and not (name == "waves" and params[name] ==
                                                       [w.name for w in ctx.campaign.rollout.waves])]
    if chosen:
        lines += ["", "**This run was triggered with** " + ", ".join(chosen) + "."]
    problems = [i for i in plan["items"] if i["status"] in ("escalate", "failed")]
    if problems:
        lines += ["", "Not applied (a human decides):", ""]
        lines += [f"- `{i['id']}`: {i['status']}: {i['reason']}" for i in problems[:20]]
        if len(problems) > 20:
            lines.append(f"- ... and {len(problems) - 20} more")
    lines += ["", "| owner | consumers by status |", "|---|---|"]
    for owner, counts in summary["by_owner"].items():
        lines.append(f"| {owner} | " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + " |")
    lines += ["", f"Evidence: [{link}]({link})"]
    return "\n".join(lines) + "\n"


# --- apply ---------------------------------------------------------------------------

def target_for(ctx: RunContext, consumer: Consumer) -> Target:
    if consumer.kind == "view":
        return Target(consumer=consumer.id, kind="view", campaign=ctx.campaign.campaign,
                      view=consumer.id.split("/", 1)[1], warehouse=ctx.campaign.warehouse,
                      base_dir=ctx.campaign.base_dir)
    if consumer.file is None or consumer.path is None:
        raise ApplyError(f"{consumer.id}: no file to apply to")
    repo = consumer.file.resolve()
    for _ in consumer.path.split("/"):
        repo = repo.parent
    return Target(consumer=consumer.id, kind="file", campaign=ctx.campaign.campaign, repo=repo,
                  path=consumer.path)


@dataclass(frozen=True)
class Applied:
    applied: list[str]  # written now
    already: list[str]  # written earlier (a retried task, a rerun): not written again
    verified: list[str]  # unchanged consumers: nothing to write
    failed: dict[str, str]


def apply_step(ctx: RunContext, wave: str, ids: list[str]) -> Applied:
    """Apply each consumer of the batch at most once, ever: what the store says was applied
    and the consumer's current bytes decide. One consumer failing fails only itself."""
    results = ctx.results()
    by_id = ctx.catalog().by_id()
    states = ctx.store.consumer_states(ctx.campaign.campaign)
    planned = {e.consumer: e for e in ctx.store.events(ctx.campaign.campaign, ctx.run_id,
                                                        actions=("patched",))}
    applied, already, verified, failed = [], [], [], {}
    for cid in ids:
        patch = results.get(cid)
        if not isinstance(patch, Patch):
            ctx.record("verified", consumer=cid, wave=wave, message="unchanged; its upstream changed")
            verified.append(cid)
            continue
        try:
            outcome = _apply_one(ctx, wave, by_id[cid], patch, states.get(cid), planned.get(cid))
        except Exception as exc:  # noqa: BLE001 - one consumer failing fails only itself
            message = str(exc) if isinstance(exc, ApplyError) else f"{type(exc).__name__}: {exc}"
            ctx.record("apply_failed", consumer=cid, wave=wave, message=message)
            failed[cid] = message
            continue
        (applied if outcome == "applied" else already).append(cid)
    return Applied(applied, already, verified, failed)


def _apply_one(ctx: RunContext, wave: str, consumer: Consumer, patch: Patch, prior: Event | None,
               planned: Event | None) -> str:
    target = target_for(ctx, consumer)
    applier = applier_for(target)
    current = applier.current(target)
    now = sha256(current)
    new = patch.text.encode("utf-8")
    if prior is not None and prior.action == "applied" and prior.after_hash == now:
        ctx.record("apply_skipped", consumer=consumer.id, wave=wave, before=prior.before_hash,
                   after=now, message=f"already applied by run {prior.run_id}")
        return "already"
    expected = planned.before_hash if planned is not None else None
    if (prior is not None and prior.action == "apply_started" and now != prior.before_hash
            and (expected is None or expected == prior.before_hash)
            and (target.kind != "file" or now == prior.after_hash)):
        # The write happened, the record of it did not (the worker died in between). Only
        # for an attempt at this plan's starting point: an older run's attempt whose "before"
        # differs (a human edited the consumer since, and this run planned the edit) is stale.
        ctx.record("applied", consumer=consumer.id, wave=wave, before=prior.before_hash, after=now,
                   message="found applied after an interrupted attempt")
        return "already"
    if expected is not None and now != expected:
        raise ApplyError(f"{consumer.id} changed since it was planned (hash {str(now)[:12]}, "
                         f"planned from {expected[:12]}): re-run the campaign to re-plan it")
    if current is not None:
        ctx.store.put_blob(current)
    ctx.store.put_blob(new)
    ctx.record("apply_started", consumer=consumer.id, wave=wave, before=now, after=sha256(new))
    message = _commit_message(ctx, consumer, wave)
    stored = applier.write(target, new, message, expected=now)
    ctx.record("applied", consumer=consumer.id, wave=wave, before=now, after=sha256(stored))
    return "applied"


def _commit_message(ctx: RunContext, consumer: Consumer, wave: str) -> str:
    evidence = ctx.directory / "evidence" / f"{_file_name(consumer.id)}.md"
    where = consumer.path or consumer.id
    return (f"skein({ctx.campaign.campaign}): {where} reads {ctx.campaign.target} instead of "
            f"{ctx.campaign.source}\n\nCampaign {ctx.campaign.campaign}, run {ctx.run_id}, "
            f"wave {wave}.\nEvidence: {evidence}\n")


# --- monitor -------------------------------------------------------------------------

@dataclass(frozen=True)
class WaveHealth:
    wave: str
    checked: int
    failed: dict[str, str]
    error_rate: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.error_rate <= self.threshold


def monitor_step(ctx: RunContext, wave: str, error_threshold: float | None = None) -> WaveHealth:
    """Run every consumer applied so far on the real target; the wave's consumers are checked.
    Error rate = (failed to apply + failed checks) / consumers of the wave."""
    from skein.monitor import monitor
    from skein.simulation.simulate import _new_sql

    waves = ctx.waves()
    names = [w.name for w in ctx.campaign.rollout.waves]
    upto = [cid for name in names[:names.index(wave) + 1] for cid in waves.get(name, [])]
    states = ctx.store.consumer_states(ctx.campaign.campaign, ctx.run_id)
    apply_failed = {cid: e.detail.get("message", "") for cid, e in states.items()
                    if e.action == "apply_failed" and cid in waves.get(wave, [])}
    results, by_id = ctx.results(), ctx.catalog().by_id()
    texts = {cid: _new_sql(by_id[cid], results.get(cid)) or by_id[cid].sql
             for cid in upto if cid not in apply_failed}
    check = [cid for cid in waves.get(wave, []) if cid in texts]
    expectations = {cid: s.expectations for cid, s in ctx.simulations().items() if cid in texts}
    checked = monitor(ctx.campaign, ctx.catalog(), ctx.report(), texts, expectations, check) if check else {}
    failed = dict(apply_failed)
    for cid, result in checked.items():
        if result.ok:
            ctx.record("monitored", consumer=cid, wave=wave, message=result.reason)
        else:
            ctx.record("monitor_failed", consumer=cid, wave=wave, message=result.reason)
            failed[cid] = result.reason
    total = len(waves.get(wave, []))
    rate = len(failed) / total if total else 0.0
    setting = ctx.wave(wave).error_threshold
    threshold = error_threshold if error_threshold is not None else (
        setting if setting is not None else ctx.campaign.rollout.error_threshold)
    health = WaveHealth(wave=wave, checked=total, failed=failed, error_rate=rate, threshold=threshold)
    ctx.record("wave_passed" if health.passed else "wave_failed", wave=wave,
               error_rate=round(rate, 4), threshold=threshold, failed=sorted(failed))
    return health


# --- rollback and finalize -----------------------------------------------------------

@dataclass(frozen=True)
class RolledBack:
    restored: list[str]
    verified: bool
    problems: dict[str, str]


def rollback_step(ctx: RunContext, reason: str = "") -> RolledBack:
    """Put back the exact previous bytes of every consumer this run applied, in reverse
    migration order, and check each one's hash against the one recorded before applying."""
    ctx.record("rollback_started", message=reason)
    # Everything this run started to apply, even if the record of the write is missing; the
    # first attempt's "before" is the pre-campaign content.
    started: dict[str, Event] = {}
    for event in ctx.store.events(ctx.campaign.campaign, ctx.run_id, actions=("apply_started",)):
        started.setdefault(event.consumer, event)
    # Reverse apply order: waves apply in dependency order, so this undoes readers before
    # what they read, and it holds even for consumers a re-planned run no longer lists.
    todo = list(reversed(started))
    last = ctx.store.consumer_states(ctx.campaign.campaign, ctx.run_id)
    written = {e.consumer: e for e in ctx.store.events(ctx.campaign.campaign, ctx.run_id,
                                                       actions=("applied",))}
    restored, problems = [], {}
    for cid in todo:
        before = started[cid].before_hash
        if cid not in written and last.get(cid) is not None and last[cid].action == "apply_failed":
            ctx.record("rollback_skipped", consumer=cid, message="never written by this run")
            continue
        # Only what this run wrote and nobody changed since: never a person's later edit.
        ours = written[cid].after_hash if cid in written else started[cid].after_hash
        try:
            consumer = ctx.catalog().by_id()[cid]
            target = target_for(ctx, consumer)
            applier = applier_for(target)
            now = sha256(applier.current(target))
            if now not in (before, ours):
                raise ApplyError(f"changed since this run applied it (hash {str(now)[:12]}, "
                                 f"applied {str(ours)[:12]}): left as it is")
            if now != before:
                previous = ctx.store.blob(before)
                applier.write(target, previous, _rollback_message(ctx, consumer, reason), expected=now)
                now = sha256(applier.current(target))
        except Exception as exc:  # noqa: BLE001 - every consumer gets its try
            problems[cid] = str(exc) if isinstance(exc, ApplyError) else f"{type(exc).__name__}: {exc}"
            ctx.record("rollback_failed", consumer=cid, before=before, message=problems[cid])
            continue
        if now != before:
            problems[cid] = f"hash after restore {str(now)[:12]} != pre-campaign {before[:12]}"
            ctx.record("rollback_failed", consumer=cid, before=before, after=now, message=problems[cid])
            continue
        ctx.record("rolled_back", consumer=cid, before=before, after=now)
        restored.append(cid)
    ctx.record("campaign_rolled_back" if not problems else "rollback_incomplete",
               restored=len(restored), problems=len(problems))
    return RolledBack(restored=restored, verified=not problems, problems=problems)


def _rollback_message(ctx: RunContext, consumer: Consumer, reason: str) -> str:
    where = consumer.path or consumer.id
    return (f"skein({ctx.campaign.campaign}): roll back {where} to {ctx.campaign.source}\n\n"
            f"Campaign {ctx.campaign.campaign}, run {ctx.run_id}: {reason or 'rolled back'}.\n")


def finalize_step(ctx: RunContext, status: str | None = None) -> dict:
    """Record how the run ended and return its counts (from the audit log)."""
    events = ctx.store.events(ctx.campaign.campaign, ctx.run_id)
    actions = _count(e.action for e in events)
    if status is None:
        if actions.get("campaign_rolled_back") or actions.get("rollback_incomplete"):
            status = "rolled_back"
        elif unfinished_waves(ctx) or not actions.get("planned"):
            status = "failed"  # a step crashed: a wave without a verdict, or no plan
        elif actions.get("rejected"):
            status = "stopped" if actions.get("applied") else "rejected"
        elif actions.get("wave_failed"):
            status = "failed"
        else:
            status = "finished"
    states = ctx.store.consumer_states(ctx.campaign.campaign, ctx.run_id)
    outcome = {"status": status, "applied": sum(1 for e in states.values() if e.action == "applied"),
               "rolled_back": sum(1 for e in states.values() if e.action == "rolled_back"),
               "failed": sum(1 for e in states.values() if e.action in ("apply_failed", "monitor_failed")),
               "escalated": _plan_counts(ctx).get("escalate", 0)}
    ctx.record("finished", **outcome)
    return outcome


def unfinished_waves(ctx: RunContext) -> list[str]:
    """Waves this run started that never got a verdict (a task crashed in between): they
    count as failed, so what they applied is rolled back."""
    verdict: dict[str, str] = {}
    for e in ctx.store.events(ctx.campaign.campaign, ctx.run_id,
                              actions=("wave_started", "wave_passed", "wave_failed")):
        verdict[e.wave] = e.action
    return [wave for wave, action in verdict.items() if action == "wave_started"]


def wave_running(ctx: RunContext, wave: str) -> bool:
    """Whether the latest decision about ``wave`` in this run is to run it."""
    decisions = [e for e in ctx.store.events(ctx.campaign.campaign, ctx.run_id,
                                             actions=("wave_started", "wave_skipped")) if e.wave == wave]
    return bool(decisions) and decisions[-1].action == "wave_started"


def record_decision(ctx: RunContext, chosen: str, user: str | None, scope: str) -> None:
    """An approver's answer, as the audit log keeps it (``scope``: all | canary | none)."""
    action = "rejected" if scope == "none" else "approved"
    ctx.store.record(ctx.campaign.campaign, ctx.run_id, f"user:{user}" if user else ctx.actor,
                     action, message=chosen, scope=scope)


def approved_scope(ctx: RunContext) -> str | None:
    """The latest decision of this run: all | canary | none (rejected) | None (not asked)."""
    decisions = ctx.store.events(ctx.campaign.campaign, ctx.run_id, actions=("approved", "rejected"))
    return decisions[-1].detail.get("scope") if decisions else None


def _plan_counts(ctx: RunContext) -> dict[str, int]:
    plan = ctx.directory / "plan.json"
    return json.loads(plan.read_text(encoding="utf-8"))["counts"] if plan.is_file() else {}


def _count(values) -> dict[str, int]:
    return dict(Counter(values))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# --- the whole run, without a scheduler (``skein run``) -------------------------------

APPROVAL_SCOPES = {"all": "Approve all", "canary": "Approve canary only", "none": "Reject"}


def run_campaign(ctx: RunContext, *, approve: str = "all", dry_run: bool = False,
                 waves: list[str] | None = None, error_threshold: float | None = None,
                 consumer_filter: str | None = None, soak: bool = True, workers: int | None = None,
                 llm_model=None) -> dict:
    """Every step in order, as the campaign DAG runs them; ``approve`` answers the approval
    (all | canary | none). Returns ``finalize_step``'s outcome."""
    import time

    from skein.batches import chunk

    ctx.record("run_started", dry_run=dry_run, waves=waves, error_threshold=error_threshold,
               filter=consumer_filter)
    ids = discover_step(ctx, consumer_filter, workers)
    agents_step(ctx, ids, llm_model)  # one process: one batch (loading the data once)
    simulate_step(ctx, ids)
    summary = summarize_step(ctx)
    if dry_run:
        return finalize_step(ctx, "dry_run")
    record_decision(ctx, APPROVAL_SCOPES[approve], None, approve)
    if approve == "none":
        return finalize_step(ctx, "rejected")
    size = max(1, len(sum(summary.waves.values(), [])))  # one process: one batch per wave
    for number, wave in enumerate(ctx.campaign.rollout.waves):
        if (waves and wave.name not in waves) or (approve == "canary" and number > 0):
            ctx.record("wave_skipped", wave=wave.name, message="not selected for this run")
            continue
        for batch in chunk(summary.waves.get(wave.name, []), size):
            apply_step(ctx, wave.name, batch)
        if soak and wave.soak_minutes:
            time.sleep(wave.soak_minutes * 60)
        health = monitor_step(ctx, wave.name, error_threshold)
        if not health.passed:
            rollback_step(ctx, f"wave {wave.name}: error rate {health.error_rate:.0%} > "
                               f"{health.threshold:.0%}")
            break
    return finalize_step(ctx)


def apply_batches(ctx: RunContext, summary: Summary) -> dict[str, dict[str, list[list[str]]]]:
    """wave -> apply group -> batches of consumer ids, for the mapped apply tasks (every
    group of ``skein.rollout.apply_groups`` is present, maybe empty); frozen in
    ``apply_batches.json`` for ``wave_batches``."""
    from skein.batches import batch_size, chunk
    from skein.rollout import apply_groups, group_of

    fleet = ctx.campaign.fleet
    by_id = ctx.catalog().by_id()
    out: dict[str, dict[str, list[list[str]]]] = {}
    for wave, ids in summary.waves.items():
        grouped: dict[str, list[str]] = {g: [] for g in apply_groups(fleet)}
        for cid in ids:
            ownership = by_id[cid].ownership
            grouped[group_of(getattr(ownership, "region", None), getattr(ownership, "tier", None),
                             fleet)].append(cid)
        size = batch_size(len(ids), fleet.batch_size)
        out[wave] = {g: chunk(members, size) for g, members in grouped.items()}
    _write_atomic(ctx.directory / "apply_batches.json", json.dumps(out, indent=1).encode())
    return out


def wave_batches(ctx: RunContext, wave: str) -> dict[str, list[list[str]]]:
    """Apply group -> batches of one wave, as ``apply_batches`` froze them."""
    return json.loads((ctx.directory / "apply_batches.json").read_text(encoding="utf-8"))[wave]
