"""The campaign DAG's tasks: each opens the run and calls one engine step (``skein.pipeline``).

XCom carries consumer ids only; everything else is in the run directory and the campaign
store. Engine imports happen inside the tasks, never at DAG parse time.
"""

from __future__ import annotations

import logging
from collections import Counter

from airflow.sdk import Asset, AssetAlias, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

log = logging.getLogger(__name__)

LABEL = "{{ skein_label }}"  # mapped instances are named after their consumers


def wave_key(wave: str) -> str:
    """A wave name as a task-id part (task ids allow letters, digits, ``-``, ``_``, ``.``)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in wave)


def consumers_alias(campaign_id: str) -> AssetAlias:
    return AssetAlias(name=f"skein:{campaign_id}:migrated")


def dataset_asset(name: str) -> Asset:
    """The Airflow asset of a warehouse dataset (``schema.table``)."""
    return Asset(name=name, uri=f"skein://dataset/{name}")


def run_context(campaign_file: str, context=None):
    """The engine's view of this DAG run, acting as this task."""
    from skein.warm import missing

    # Before the engine's first import: what the worker preloaded (airflow_local_settings.py)
    # decides whether this task spends seconds importing it.
    not_preloaded = missing()
    if not_preloaded:
        log.info("not preloaded by this worker, imported by this task: %s", ", ".join(not_preloaded))
    else:
        log.info("engine preloaded by this worker")
    from skein.pipeline import start_run

    context = context or get_current_context()
    ti = context["ti"]
    actor = f"task:{ti.task_id}" + (f"[{ti.map_index}]" if ti.map_index is not None and ti.map_index >= 0 else "")
    return start_run(campaign_file, context["run_id"], actor=actor)


def _user_error(fn):
    """A campaign or warehouse problem fails the task at once: retrying will not fix it."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from skein.errors import SkeinError

        try:
            return fn(*args, **kwargs)
        except SkeinError as exc:
            raise AirflowFailException(str(exc)) from exc
    return wrapper


def _outcomes(step: str, outcomes: dict[str, str]) -> dict[str, int]:
    """Log each consumer's outcome (an instance holds a batch: its log is where each one is
    seen in Airflow); the counts, for XCom."""
    for cid, outcome in outcomes.items():
        log.info("%s: %s: %s", step, cid, outcome)
    return dict(Counter(outcomes.values()))


def _label(ids: list[str]) -> str:
    context = get_current_context()
    context["skein_label"] = ids[0] if len(ids) == 1 else f"{ids[0]} +{len(ids) - 1}" if ids else "-"
    return context["skein_label"]


@task
@_user_error
def discover(campaign_file: str) -> list[list[str]]:
    """Discovery and the catalog; returns the batches agents and simulation map over."""
    from skein.pipeline import discover as discover_consumers
    from skein.pipeline import work_batches

    context = get_current_context()
    ctx = run_context(campaign_file, context)
    params = context["params"]
    ctx.record_start(dry_run=bool(params.get("dry_run")), waves=params.get("waves"),
                     error_threshold=params.get("error_threshold"), consumer_filter=params.get("consumers"))
    ids = discover_consumers(ctx, params.get("consumers"))
    log.info("%d impacted consumers; run directory %s", len(ids), ctx.directory)
    return work_batches(ctx)


@task(map_index_template=LABEL)
@_user_error
def agents(campaign_file: str, ids: list[str]) -> dict[str, int]:
    from skein.pipeline import rewrite_consumers

    _label(ids)
    ctx = run_context(campaign_file)
    return _outcomes("rewrite", rewrite_consumers(ctx, ids, _llm_model(ctx)))


@task(map_index_template=LABEL)
@_user_error
def simulate(campaign_file: str, ids: list[str]) -> dict[str, int]:
    from skein.pipeline import simulate_consumers

    _label(ids)
    ctx = run_context(campaign_file)
    return _outcomes("simulation", simulate_consumers(ctx, ids, _llm_model(ctx)))


@task
@_user_error
def summarize(campaign_file: str) -> dict[str, int]:
    """The plan, evidence, waves and the apply batches of every wave; returns the plan's counts."""
    from skein.pipeline import summarize as summarize_plan
    from skein_airflow.notify import notify

    context = get_current_context()
    ctx = run_context(campaign_file, context)
    summary = summarize_plan(ctx)
    held = summary.escalated + summary.failed
    if held:
        lines = [f"- `{cid}`" for cid in held[:30]] + ([f"- ... {len(held) - 30} more"] if len(held) > 30 else [])
        notify(ctx, "escalation", f"{ctx.campaign.campaign}: {len(held)} consumer(s) need a human",
               f"{len(summary.escalated)} escalated, {len(summary.failed)} failed simulation "
               f"(run {ctx.run_id}); evidence in {ctx.directory}.\n\n" + "\n".join(lines), context)
    log.info("plan: %s; waves: %s", summary.counts, {w: len(ids) for w, ids in summary.waves.items()})
    return summary.counts


@task(trigger_rule="none_failed")
@_user_error
def start_wave(campaign_file: str, wave: str, group: str | None) -> list[list[str]]:
    """Decide, from the store, whether this wave runs, and record it. Returns the batches of
    ``group`` to apply (nothing when ``group`` is None: ``select_batches`` then picks each
    group's), or nothing when the wave does not run: it never skips itself, so the mapped
    apply task always finds a list to expand (an empty one skips it)."""
    from skein.pipeline import start_wave as decide, wave_batches

    context = get_current_context()
    ctx = run_context(campaign_file, context)
    params = context["params"]
    reason = decide(ctx, wave, dry_run=bool(params.get("dry_run")), selected=params.get("waves"))
    if reason:
        log.info("wave %s does not run: %s", wave, reason)
        return []
    return wave_batches(ctx, wave, group) if group else []


@task(trigger_rule="none_failed")
def select_batches(campaign_file: str, wave: str, group: str) -> list[list[str]]:
    """One apply group's batches (campaigns with several regions or tiers: queue and priority
    are fixed per mapped task, so each group is its own mapped task)."""
    from skein.pipeline import wave_batches

    return wave_batches(run_context(campaign_file), wave, group)


def _wave_started(ctx, wave: str) -> bool:
    from skein.pipeline import wave_running

    return wave_running(ctx, wave)


@task(trigger_rule="none_failed", map_index_template=LABEL)
@_user_error
def apply(campaign_file: str, wave: str, ids: list[str]) -> dict[str, int]:
    from skein.pipeline import apply_wave

    _label(ids)
    ctx = run_context(campaign_file)
    if not _wave_started(ctx, wave):
        raise AirflowSkipException(f"wave {wave} does not run")
    done = apply_wave(ctx, wave, ids)
    _outcomes("apply", {**{c: "applied" for c in done.applied},
                        **{c: "applied by an earlier attempt" for c in done.already},
                        **{c: "unchanged, verified" for c in done.verified},
                        **{c: "held by a person (skipped or escalated)" for c in done.held},
                        **{c: "not reached: the campaign is paused" for c in done.paused}})
    for cid, problem in done.failed.items():
        log.warning("not applied: %s: %s", cid, problem)
    if done.paused:
        log.warning("campaign paused: %d consumer(s) of this batch not applied", len(done.paused))
    return {"applied": len(done.applied), "already": len(done.already), "verified": len(done.verified),
            "failed": len(done.failed), "held": len(done.held), "paused": len(done.paused)}


@task.sensor(trigger_rule="none_failed", mode="reschedule", poke_interval=30)
def soak(campaign_file: str, wave: str, minutes: float) -> bool:
    """Wait ``minutes`` after the wave's last consumer was applied (not at all when the wave
    did not run)."""
    from datetime import UTC, datetime, timedelta

    from skein.pipeline import last_wave_activity

    ctx = run_context(campaign_file)
    if not _wave_started(ctx, wave):
        return True
    return datetime.now(UTC) - last_wave_activity(ctx, wave) >= timedelta(minutes=minutes)


@task(trigger_rule="none_failed")
@_user_error
def monitor(campaign_file: str, wave: str) -> dict:
    from skein.pipeline import monitor_wave

    context = get_current_context()
    ctx = run_context(campaign_file, context)
    if not _wave_started(ctx, wave):
        raise AirflowSkipException(f"wave {wave} did not run")
    health = monitor_wave(ctx, wave, context["params"].get("error_threshold"))
    log.info("wave %s: %d consumers, error rate %.1f%% (threshold %.1f%%)", wave, health.checked,
             100 * health.error_rate, 100 * health.threshold)
    for cid, reason in health.failed.items():
        log.warning("failed: %s: %s", cid, reason)
    return {"wave": wave, "checked": health.checked, "failed": len(health.failed),
            "error_rate": health.error_rate, "threshold": health.threshold, "passed": health.passed}


@task(trigger_rule="all_done")
@_user_error
def rollback(campaign_file: str) -> dict:
    """Runs after the waves whatever happened; rolls back if a wave failed its monitoring or
    never got a verdict (a task crashed after it started applying)."""
    from skein.pipeline import rollback as roll_back
    from skein.pipeline import rollback_reason
    from skein_airflow.notify import notify

    context = get_current_context()
    ctx = run_context(campaign_file, context)
    reason = rollback_reason(ctx)
    if reason is None:
        raise AirflowSkipException("no wave failed")
    done = roll_back(ctx, reason)
    problems = "".join(f"\n- `{cid}`: {p}" for cid, p in done.problems.items())
    notify(ctx, "rollback", f"{ctx.campaign.campaign}: rolled back ({reason})",
           f"Run {ctx.run_id}: {len(done.restored)} consumer(s) restored to their exact previous "
           f"content{'; NOT restored:' + problems if problems else ', hashes verified'}.", context)
    if not done.verified:
        raise AirflowFailException(f"rollback incomplete: {done.problems}")
    return {"restored": len(done.restored)}


@task(trigger_rule="all_done")
@_user_error
def finalize(campaign_file: str) -> dict:
    """Record the outcome, notify, and emit asset events for what was migrated. A rolled back
    or failed campaign fails this task, so the run shows red."""
    from skein.pipeline import finalize as finish
    from skein_airflow.notify import notify

    context = get_current_context()
    ctx = run_context(campaign_file, context)
    from skein.console import rollback_lines

    outcome = finish(ctx, "dry_run" if context["params"].get("dry_run") else None)
    notify(ctx, "finished", f"{ctx.campaign.campaign}: {outcome['status']}",
           f"Run {ctx.run_id}: {outcome['applied']} applied, {outcome['escalated']} escalated, "
           f"{outcome['failed']} failed, {outcome['rolled_back']} rolled back"
           f"{', ' + str(outcome['not_restored']) + ' NOT restored' if outcome['not_restored'] else ''}. "
           + "".join(line.strip() + " " for line in rollback_lines(outcome))
           + f"Evidence: {ctx.files.summary_html}", context)
    if outcome["status"] in ("rolled_back", "failed"):
        raise AirflowFailException(f"campaign {outcome['status']}: {outcome}")
    if outcome["applied"]:
        _emit_assets(ctx, context)
    return outcome


def _emit_assets(ctx, context) -> None:
    """The target, and each migrated consumer that is itself a dataset (view, dbt model)."""
    from skein.pipeline.finalize import migrated_outputs

    events = context["outlet_events"]
    alias = consumers_alias(ctx.campaign.campaign)
    # Through the alias, so only a run that applied something announces the target.
    events[alias].add(dataset_asset(ctx.campaign.target),
                      extra={"campaign": ctx.campaign.campaign, "run_id": ctx.run_id})
    for cid, output, after in migrated_outputs(ctx):
        events[alias].add(dataset_asset(output), extra={"consumer": cid, "after": after})


def _llm_model(ctx):
    """The pydantic-ai model of the campaign's ``pydanticai`` connection, when the LLM agent is on."""
    settings = ctx.campaign.agents.llm
    if not settings.enabled or settings.model:
        return None
    from skein_airflow.llm import model_from_connection

    return model_from_connection(settings.conn_id)
