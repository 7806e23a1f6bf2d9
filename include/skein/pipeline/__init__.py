"""The engine pipeline: the steps of a campaign run, the one API every front end calls.

``skein plan`` runs the first four (``plan_campaign``), ``skein run`` all of them
(``run_campaign``), and each Airflow task of a campaign DAG is one call of one step
(``plugins/skein_airflow/campaign_tasks.py``). Steps keep nothing in memory between calls:
each reads what earlier steps froze in the run directory (``skein.rundir``) and the
campaign store, and writes its own files there (``docs/architecture.md``).

1. ``discover``            catalog.pkl, discovery.json
2. ``rewrite_consumers``   agents/, llm/
3. ``simulate_consumers``  simulation/, retry/ (refuted patches back to the LLM agent)
4. ``summarize``           plan.json, patches/, evidence/, summary.*, waves.json, apply_batches.json
   approval                ``rebuild_waves`` (waves.json, apply_batches.json minus the holds now),
                           ``approval_text``, ``record_decision`` (store)
5. ``start_wave`` + ``apply_wave``   git commits, views (store: apply_started / applied)
6. ``monitor_wave``        store: monitored / wave_passed / wave_failed
7. ``rollback``            store: rolled_back (an owed rollback of an earlier run: finished
                           first thing in ``discover``, ``finish_interrupted_rollbacks``)
8. ``finalize``            store: finished
"""

from skein.pipeline.apply import Applied, apply_wave, target_for
from skein.pipeline.ask import AskState, approval_options, approval_text, rebuild_waves
from skein.pipeline.campaign import plan_campaign, run_campaign
from skein.pipeline.context import RunContext, open_plan, run_directory, start_run
from skein.pipeline.discover import discover, filter_report, work_batches
from skein.pipeline.finalize import finalize, run_status
from skein.pipeline.monitor import WaveHealth, monitor_wave
from skein.pipeline.rewrite import rewrite_consumers
from skein.pipeline.rollback import RolledBack, finish_interrupted_rollbacks, rollback
from skein.pipeline.simulate import simulate_consumers
from skein.pipeline.summarize import Summary, summarize
from skein.pipeline.waves import (
    approved_scope,
    last_wave_activity,
    record_decision,
    rollback_reason,
    start_wave,
    unfinished_waves,
    wave_batches,
    wave_running,
)

__all__ = [
    "Applied", "AskState", "RolledBack", "RunContext", "Summary", "WaveHealth", "apply_wave",
    "approval_options", "approval_text", "approved_scope", "discover", "filter_report", "finalize",
    "finish_interrupted_rollbacks", "last_wave_activity", "rebuild_waves",
    "monitor_wave", "open_plan", "plan_campaign", "record_decision", "rewrite_consumers",
    "rollback", "rollback_reason", "run_campaign", "run_directory", "run_status",
    "simulate_consumers", "start_run", "start_wave", "summarize", "target_for",
    "unfinished_waves", "wave_batches", "wave_running",
]
