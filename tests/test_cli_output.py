"""Issue 20, what the CLI prints: per-wave counts of ``skein run --dry-run`` and ``skein plan``,
and progress bars that stay readable at 80 columns."""

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


def test_progress_bars_fit_80_columns(monkeypatch):
    import io

    import rich.console
    from rich.cells import cell_len

    from skein.console import progress_bars

    buf = io.StringIO()
    console = rich.console.Console(file=buf, width=80, force_terminal=True, color_system=None)
    # The console the CLI makes for stderr is this 80-column one.
    monkeypatch.setattr(rich.console, "Console", lambda *args, **kwargs: console)
    long_id = "analytics-warehouse/models/marts/finance/" + "very_long_consumer_name_" * 3 + ".sql"
    with progress_bars(True) as report:
        for number, step in enumerate(STEPS):
            report(step, number, 10, long_id if number % 2 else "growth/a.sql")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and all(cell_len(line) <= 80 for line in lines), [l for l in lines if cell_len(l) > 80]
    # every frame, while a consumer's id is shown too: each line starts with a whole step name
    assert all(any(line.startswith(step + " ") for step in STEPS) for line in lines), lines
    last = lines[-len(STEPS):]  # the final frame: one line per step, each done
    for step, line in zip(STEPS, last):
        assert line.startswith(step + " ") and "10/10" in line, line


def test_skein_run_in_an_80_column_terminal(small_fleet, tmp_path):
    """The real CLI in a pseudo-terminal with ``COLUMNS=80``: its progress lines fit."""
    import os
    import pty
    import subprocess
    import sys

    from rich.cells import cell_len

    main, child = pty.openpty()
    code = "import sys; from skein.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "run", str(small_fleet), "--dry-run",
                             "--no-soak", "--workers", "1", "--run-id", "pty"],
                            stdout=child, stderr=child, stdin=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "80", "LINES": "40", "TERM": "xterm"})
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=300) in (0, 3)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    bars = [line for line in lines if "━" in line]
    assert bars, text[-2000:]
    assert all(cell_len(line) <= 80 for line in bars), [l for l in bars if cell_len(l) > 80]
    assert any(line.startswith("simulate ") for line in bars)
