"""Fixtures of the parity suite: generated TPC data, baselines, the rule agent; and a
terminal summary with one line per migration (also written as JSON under pytest's tmp dir).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from parity.harness import Baseline, MigrationSummary, make_baseline
from parity.tpc import GeneratorMissing, generate, load_queries

SUMMARY_PROPERTY = "parity_summary"


def _root_tmp(tmp_path_factory) -> Path:
    """pytest's tmp dir for this run, shared by xdist workers (each has a popen-gwN child)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if base.name.startswith("popen-gw") else base


@pytest.fixture(scope="session")
def tpc_data(tmp_path_factory):
    cache: dict[str, Path] = {}

    def data(benchmark: str) -> Path:
        if benchmark not in cache:
            try:
                cache[benchmark] = generate(benchmark, tmp_path_factory.mktemp(f"{benchmark}-data"))
            except GeneratorMissing as exc:
                if os.environ.get("CI"):
                    pytest.fail(str(exc))
                pytest.skip(str(exc))
        return cache[benchmark]

    return data


@pytest.fixture(scope="session")
def baseline(tpc_data):
    cache: dict[str, Baseline] = {}

    def get(benchmark: str) -> Baseline:
        if benchmark not in cache:
            cache[benchmark] = make_baseline(benchmark, tpc_data(benchmark), load_queries(benchmark))
        return cache[benchmark]

    yield get
    for opened in cache.values():
        opened.close()


@pytest.fixture(scope="session")
def rule_rewrite():
    """``skein.agents.rule.rewrite``; the suite skips until the rule agent exists."""
    try:
        module = importlib.import_module("skein.agents.rule")
    except ModuleNotFoundError as exc:
        if exc.name != "skein.agents.rule":
            raise
        pytest.skip("skein.agents.rule does not exist yet")
    return module.rewrite


@pytest.fixture
def record_summary(record_property, tmp_path_factory):
    """Print the migration's summary line, attach it to the report, write its JSON."""

    def record(summary: MigrationSummary) -> Path:
        data = summary.as_json()
        record_property(SUMMARY_PROPERTY, json.dumps(data))
        print(summary.line())
        out = _root_tmp(tmp_path_factory) / "parity"
        out.mkdir(exist_ok=True)
        path = out / f"{summary.benchmark}-{summary.migration}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    summaries = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", ()):
                if key == SUMMARY_PROPERTY and getattr(report, "when", "call") == "call":
                    summaries.append(json.loads(value))
    if not summaries:
        return
    summaries.sort(key=lambda s: (s["benchmark"], s["migration"]))
    terminalreporter.section("parity: original vs rewritten query results")
    total_rewritten = total_matching = 0
    for s in summaries:
        total_rewritten += len(s["rewritten"])
        total_matching += len(s["matching"])
        share = 100.0 * len(s["matching"]) / len(s["rewritten"]) if s["rewritten"] else 100.0
        terminalreporter.write_line(
            f"{s['benchmark']:5} {s['migration']:24} queries {s['queries']:3}  read {len(s['reading']):3}  "
            f"rewritten {len(s['rewritten']):3}  escalated {len(s['escalations']):2} "
            f"(expected {len(s['expected_escalations'])})  match {len(s['matching']):3}/"
            f"{len(s['rewritten']):<3} ({share:5.1f}%)  with rows {s['nonempty_results']:3}  "
            f"rewrite {s['rewrite_s']:.2f}s")
        for q, reason in sorted({**s["mismatches"], **s["crashes"],
                                 **s["unexpected_escalations"]}.items()):
            terminalreporter.write_line(f"      {q}: {reason}")
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        path = _root_tmp(factory) / "parity-summary.json"
        path.write_text(json.dumps({"migrations": summaries, "rewritten": total_rewritten,
                                    "matching": total_matching}, indent=2) + "\n")
        terminalreporter.write_line(f"{total_matching}/{total_rewritten} rewritten queries match; "
                                    f"summary: {path}")
