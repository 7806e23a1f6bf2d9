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
