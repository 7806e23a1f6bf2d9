"""Step 6, monitor a wave: run what was applied on the real target, check the wave's
consumers with the expectations their simulation recorded, and give the wave its verdict."""

from __future__ import annotations

from dataclasses import dataclass

from skein.audit import Action
from skein.pipeline.context import RunContext
from skein.pipeline.live import refresh_summary


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


def monitor_wave(ctx: RunContext, wave: str, error_threshold: float | None = None) -> WaveHealth:
    """Every consumer applied so far runs (in migration order); the wave's are checked.
    Error rate = (failed to apply + failed checks) / consumers of the wave."""
    from skein.rollout import wave_threshold
    from skein.simulation.monitor import monitor
    from skein.simulation.simulate import new_sql

    names = [w.name for w in ctx.campaign.rollout.waves]
    waves = waves_without_held(ctx, names[:names.index(wave) + 1])
    upto = [cid for name in names[:names.index(wave) + 1] for cid in waves.get(name, [])]
    states = ctx.store.consumer_states(ctx.campaign_id, ctx.run_id)
    apply_failed = {cid: e.detail.get("message", "") for cid, e in states.items()
                    if e.action == Action.APPLY_FAILED and cid in waves.get(wave, [])}
    results, by_id = ctx.results(), ctx.catalog().by_id()
    texts = {cid: new_sql(by_id[cid], results.get(cid)) or by_id[cid].sql
             for cid in upto if cid not in apply_failed}
    check = [cid for cid in waves.get(wave, []) if cid in texts]
    expectations = {cid: s.expectations for cid, s in ctx.simulations().items() if cid in texts}
    checked = monitor(ctx.campaign, ctx.catalog(), ctx.report(), texts, expectations, check) if check else {}
    failed = dict(apply_failed)
    for cid, result in checked.items():
        ctx.record(Action.MONITORED if result.ok else Action.MONITOR_FAILED, consumer=cid, wave=wave,
                   message=result.reason)
        if not result.ok:
            failed[cid] = result.reason
    total = len(waves.get(wave, []))
    rate = len(failed) / total if total else 0.0
    health = WaveHealth(wave=wave, checked=total, failed=failed, error_rate=rate,
                        threshold=wave_threshold(ctx.campaign, wave, error_threshold))
    ctx.record(Action.WAVE_PASSED if health.passed else Action.WAVE_FAILED, wave=wave,
               error_rate=round(rate, 4), threshold=health.threshold, failed=sorted(failed))
    refresh_summary(ctx, f"monitoring wave {wave}")
    return health


def waves_without_held(ctx: RunContext, names: list[str]) -> dict[str, list[str]]:
    """``waves.json`` without the consumers this run did not apply because a person held them
    or paused the campaign: they are not migrated, so neither run nor counted."""
    out = set()
    for event in ctx.events(Action.HELD, Action.APPLY_PAUSED):
        out.update(event.detail.get("consumers") or [event.consumer])
    waves = ctx.files.waves()
    return {name: [cid for cid in waves.get(name, []) if cid not in out] for name in names}
