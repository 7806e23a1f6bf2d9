"""Shared test helpers: small real git repositories and DuckDB warehouses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

GIT_ENV = {"GIT_AUTHOR_NAME": "Skein Test", "GIT_AUTHOR_EMAIL": "test@skein.invalid",
           "GIT_COMMITTER_NAME": "Skein Test", "GIT_COMMITTER_EMAIL": "test@skein.invalid"}


def make_git_repo(root: Path, files: dict[str, str]) -> Path:
    """A real git repository holding ``files``, all committed."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", "init"], check=True, env=env)
    return root


def rewritten(campaign, out: Path, llm_model=None):
    """``skein plan``'s first steps (discover, rewrite) into ``out``; returns (context, ids)."""
    from skein.pipeline import discover, open_plan, rewrite_consumers

    ctx = open_plan(campaign, out)
    ids = discover(ctx, workers=1)
    rewrite_consumers(ctx, ids, llm_model)
    return ctx, ids


def refute_patch(ctx, victim: str, wrong_text: str) -> None:
    """Replace one patch with a wrong one: the dry run must refute it, with differing rows,
    and the plan must count it as failed, never patched."""
    from skein.pipeline import simulate_consumers, summarize

    patch = ctx.results()[victim]
    ctx.files.write_agent_result(victim, patch.model_copy(update={"text": wrong_text}))
    assert simulate_consumers(ctx, ctx.consumer_ids())[victim] == "fail"
    simulation = ctx.simulations()[victim]
    assert simulation.samples
    plan = summarize(ctx).plan
    item = next(i for i in plan.items if i.id == victim)
    assert item.status == "failed" and item.reason.startswith("simulation fail")
    assert plan.counts["failed"] == 1
    assert ctx.files.plan() == plan


@pytest.fixture(scope="module")
def warehouse():
    """The rule-agent fixtures' small DuckDB warehouse (tests/test_rule_agent.py DATA)."""
    import duckdb

    from test_rule_agent import DATA

    con = duckdb.connect()
    con.execute(DATA)
    yield con
    con.close()


# Property-based tests (tests/test_property_*.py). "ci" is what `make test` runs: 1,000
# generated cases per property, the same ones on every run (derandomized, no example
# database), no per-example deadline (2 shared cores). SKEIN_HYPOTHESIS_PROFILE=dev runs 100
# random ones, for a quick local loop; a failure prints the example to paste into @example.
def _hypothesis_profiles() -> None:
    try:
        from hypothesis import HealthCheck, Phase, settings
    except ImportError:  # pragma: no cover - hypothesis is in requirements.txt
        return
    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    # No "explain" phase: on a failure it reruns the example hundreds of times (minutes).
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]
    common = dict(deadline=None, database=None, suppress_health_check=quiet, print_blob=True,
                  phases=phases)
    settings.register_profile("ci", max_examples=1000, derandomize=True, **common)
    settings.register_profile("dev", max_examples=100, **common)
    settings.load_profile(os.environ.get("SKEIN_HYPOTHESIS_PROFILE", "ci"))


_hypothesis_profiles()
