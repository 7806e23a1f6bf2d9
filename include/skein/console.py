"""What the CLI shows a person: progress while steps work, a summary when they are done.

Progress bars (rich) only on a terminal; piped output gets the summary alone, and ``--json``
the machine-readable outcome instead.

>>> print(run_summary({"status": "finished", "applied": 3, "migrated_before": 0, "rolled_back": 0,
...                    "failed": 0, "escalated": 1}, "plays-v2", "r1", "/h/runs/plays-v2/r1"))
Run r1 of plays-v2: finished.
  3 consumer(s) migrated in this run.
  1 escalated to a human: see /h/runs/plays-v2/r1/summary.html
Evidence: /h/runs/plays-v2/r1/summary.html   Audit: skein audit plays-v2 --run r1
>>> print(run_summary({"status": "finished", "applied": 1, "migrated_before": 0, "rolled_back": 0,
...                    "failed": 1, "refuted": 1, "escalated": 0}, "c", "r1", "/d").splitlines()[0])
Run r1 of c: finished, but 2 consumer(s) FAILED and are not migrated.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from skein.pipeline.context import Progress

WHAT_HAPPENED = {
    "finished": "finished",
    "dry_run": "dry run: planned and simulated, nothing applied",
    "rejected": "rejected: nothing applied",
    "stopped": "stopped by an approver after some waves",
    "rolled_back": "ROLLED BACK: a wave passed the error threshold; every change of this run was undone",
    "failed": "FAILED: a step did not finish (see the audit log)",
}


def run_summary(outcome: dict, campaign: str, run_id: str, directory: str) -> str:
    """A few lines a person reads after ``skein run``: what happened and where to look."""
    lines = [f"Run {run_id} of {campaign}: {what_happened(outcome)}."]
    lines += rollback_lines(outcome)
    if outcome["applied"]:
        lines.append(f"  {outcome['applied']} consumer(s) migrated in this run.")
    elif outcome.get("migrated_before") and outcome["status"] == "finished":
        lines.append(f"  Nothing left to apply: {outcome['migrated_before']} consumer(s) were "
                     "already migrated by earlier runs.")
    elif outcome["status"] == "finished":
        lines.append("  Nothing to apply: no consumer needed a change.")
    if outcome["rolled_back"]:
        lines.append(f"  {outcome['rolled_back']} consumer(s) restored to their exact previous bytes.")
    if outcome["failed"]:
        lines.append(f"  {outcome['failed']} consumer(s) failed to apply or failed monitoring.")
    if outcome.get("refuted"):
        lines.append(f"  {outcome['refuted']} patch(es) refuted by their dry run: not applied.")
    if outcome["escalated"]:
        lines.append(f"  {outcome['escalated']} escalated to a human: see {directory}/summary.html")
    lines.append(f"Evidence: {directory}/summary.html   Audit: skein audit {campaign} --run {run_id}")
    return "\n".join(lines)


def what_happened(outcome: dict) -> str:
    """The status in words; "every change was undone" only when it was.

    >>> what_happened({"status": "rolled_back", "not_restored": 2})
    'ROLLED BACK, INCOMPLETE: a wave passed the error threshold; 2 consumer(s) could not be restored'
    """
    if outcome["status"] == "rolled_back" and outcome.get("not_restored"):
        return (f"ROLLED BACK, INCOMPLETE: a wave passed the error threshold; "
                f"{outcome['not_restored']} consumer(s) could not be restored")
    if outcome["status"] == "failed" and outcome.get("rollback_pending"):
        return "FAILED during its rollback: the next run of the campaign finishes the rollback"
    failed = outcome.get("failed", 0) + outcome.get("refuted", 0)
    if failed and outcome["status"] == "finished":
        return f"finished, but {failed} consumer(s) FAILED and are not migrated"
    return WHAT_HAPPENED.get(outcome["status"], outcome["status"])


def wave_counts(statuses: dict[str, str], waves: dict[str, list[str]]) -> list[str]:
    """One line per wave with its consumers' counts in ``skein.statuses``' words, then the
    consumers in no wave (escalated, blocked, failed): ``skein run --dry-run`` says what each
    wave would do, not only the campaign's totals (issue 20). ``statuses``: consumer id to its
    status.

    >>> print("\\n".join(wave_counts({"a": "pending", "b": "verified", "c": "pending",
    ...                                "d": "escalated"}, {"canary": ["a"], "everyone": ["b", "c"]})))
      wave canary: 1 pending
      wave everyone: 1 pending, 1 verified
      in no wave: 1 escalated
    """
    from collections import Counter

    from skein.statuses import STATUSES

    def words(ids) -> str:
        counts = Counter(statuses[i] for i in ids if i in statuses)
        return ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]) or "nothing"

    lines = [f"  wave {name}: {words(ids)}" for name, ids in waves.items()]
    placed = {i for ids in waves.values() for i in ids}
    rest = [i for i in statuses if i not in placed]
    if rest:
        lines.append(f"  in no wave: {words(rest)}")
    return lines


def rollback_lines(outcome: dict) -> list[str]:
    """The interrupted rollbacks of earlier runs this run finished, and what stays migrated.

    >>> rollback_lines({"status": "rolled_back", "migrated_before": 1, "finished_rollbacks": [
    ...     {"run": "r0", "restored": 3, "not_restored": {"repo/a.sql": "changed since"}}]})
    ['  Finished the interrupted rollback of run r0: 3 consumer(s) restored; NOT restored: repo/a.sql (changed since).', '  1 consumer(s) migrated by earlier finished runs stay migrated.']
    """
    lines = []
    for done in outcome.get("finished_rollbacks") or []:
        missed = "; ".join(f"{cid} ({why})" for cid, why in list(done["not_restored"].items())[:10])
        lines.append(f"  Finished the interrupted rollback of run {done['run']}: {done['restored']} "
                     f"consumer(s) restored" + (f"; NOT restored: {missed}." if missed else "."))
    if outcome["status"] == "rolled_back" and outcome.get("migrated_before"):
        lines.append(f"  {outcome['migrated_before']} consumer(s) migrated by earlier finished runs "
                     "stay migrated.")
    return lines


# The step's name never shrinks (it says what is working); the consumer's id gives way first.
STEP_WIDTH = 26
BAR_WIDTH = 20
COUNT_WIDTH = 11  # "1234/12345"


def tail(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, keeping its end: a consumer id's file name says
    more than its repository's folder.

    >>> tail("growth/models/marts/plays_daily.sql", 20)
    '…/plays_daily.sql'
    >>> tail("growth/a.sql", 20), tail("abc", 0)
    ('growth/a.sql', '')
    """
    if len(text) <= width:
        return text
    if width <= 1:
        return ""
    end = text[-(width - 1):]
    cut = end.find("/")  # start at a folder boundary, so no name is cut in the middle
    return "…" + (end[cut:] if 0 <= cut < len(end) - 1 else end)


@contextlib.contextmanager
def progress_bars(enabled: bool | None = None, console=None) -> Iterator[Progress | None]:
    """A ``Progress`` callback drawing one bar per step on stderr, or None when stderr is not
    a terminal (``enabled`` forces it either way). Every line fits the terminal's width (80
    columns too): fixed widths for the step, the bar and the count, the rest for the consumer."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn
    from rich.table import Column

    console = console or Console(stderr=True)
    # rich separates the four columns with one space each.
    room = max(0, console.width - STEP_WIDTH - BAR_WIDTH - COUNT_WIDTH - 4)
    bars = Bars(TextColumn("{task.description}", table_column=Column(
                    width=STEP_WIDTH, no_wrap=True, overflow="ellipsis")),
                BarColumn(bar_width=BAR_WIDTH),
                MofNCompleteColumn(table_column=Column(width=COUNT_WIDTH, no_wrap=True)),
                TextColumn("{task.fields[consumer]}", style="dim",
                           table_column=Column(width=room, no_wrap=True, overflow="ellipsis")),
                console=console, transient=False)
    tasks: dict[str, int] = {}

    def report(step: str, done: int, total: int, consumer: str | None) -> None:
        if step not in tasks:
            tasks[step] = bars.add_task(step, total=total, consumer="")
        bars.update(tasks[step], completed=done, total=total, consumer=tail(consumer or "", room))

    with bars:
        yield report
        for task in tasks.values():  # each step's last consumer was started, and is done now
            bars.update(task, completed=bars.tasks[task].total, consumer="")
