"""Issue 20, the CLI and the demo: per-wave counts of ``skein run --dry-run``, progress bars at
80 columns, and a demo consumer that fails monitoring after apply (rollback, then replay)."""

from __future__ import annotations

import json
import re

import pytest

from skein.cli import main as skein
from skein.demo.fleet import build_demo_fleet
from skein.statuses import of_plan


@pytest.fixture
def small_fleet(tmp_path, monkeypatch):
    monkeypatch.setenv("SKEIN_HOME", str(tmp_path / "home"))
    return build_demo_fleet(tmp_path / "fleet", consumers=14, seed=7)


def test_dry_run_prints_counts_per_wave(small_fleet, tmp_path, capsys):
    code = skein(["run", str(small_fleet), "--dry-run", "--no-soak", "--workers", "1",
                  "--run-id", "dry"])
    out = capsys.readouterr().out
    assert code in (0, 3), out
    run_dir = next((tmp_path / "home").rglob("dry"))
    plan = json.loads((run_dir / "plan.json").read_text())
    waves = json.loads((run_dir / "waves.json").read_text())
    status = {i["id"]: str(of_plan(i["status"], i["simulation"])) for i in plan["items"]}
    for name, ids in waves.items():
        expected = {s: sum(status[i] == s for i in ids) for s in set(status[i] for i in ids)}
        line = next(l for l in out.splitlines() if l.strip().startswith(f"wave {name}:"))
        shown = {w: int(n) for n, w in re.findall(r"(\d+) (\w+)", line)}
        assert shown == expected, (line, expected)
    rest = [i for i in status if not any(i in ids for ids in waves.values())]
    if rest:
        line = next(l for l in out.splitlines() if l.strip().startswith("in no wave:"))
        assert sum(int(n) for n in re.findall(r"(\d+) \w+", line)) == len(rest)


STEPS = ("simulate", "simulate again", "retry with the LLM agent", "apply canary", "apply everyone")


def test_progress_bars_fit_80_columns():
    import io

    from rich.cells import cell_len
    from rich.console import Console

    from skein.console import progress_bars

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    long_id = "analytics-warehouse/models/marts/finance/" + "very_long_consumer_name_" * 3 + ".sql"
    with progress_bars(True, console=console) as report:
        for number, step in enumerate(STEPS):
            report(step, number, 10, long_id if number % 2 else "growth/a.sql")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and all(cell_len(line) <= 80 for line in lines), [l for l in lines if cell_len(l) > 80]
    last = lines[-len(STEPS):]  # the final frame: one line per step, every name whole
    for step, line in zip(STEPS, last):
        assert line.startswith(step + " ") and "10/10" in line, line
