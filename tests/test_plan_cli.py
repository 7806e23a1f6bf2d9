"""`skein plan` and `skein rewrite` on the demo fleet: real git repos, real warehouse."""

from __future__ import annotations

import json

import pytest

from conftest import refute_patch, rewritten

from skein.cli import main
from skein.demo.fleet import build_demo_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan-fleet")
    return out, build_demo_fleet(out, consumers=40, seed=7)


def test_plan_writes_patches_and_escalations(fleet, tmp_path, capsys):
    _, campaign = fleet
    code = main(["plan", str(campaign), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 3  # something is escalated (dropped column users): a human must look
    plan = json.loads((tmp_path / "plan.json").read_text())
    discovery = json.loads((tmp_path / "discovery.json").read_text())
    assert [i["id"] for i in plan["items"]] == [c["id"] for c in discovery["consumers"]]
    by_status = {}
    for item in plan["items"]:
        by_status.setdefault(item["status"], []).append(item)
    assert plan["counts"] == {s: len(by_status.get(s, []))
                              for s in ("patched", "escalated", "unchanged", "failed")}
    assert plan["counts"]["failed"] == 0  # every patch returns the original rows on the data
    for item in by_status["unchanged"]:  # downstream of an escalated producer: nothing to run
        assert item["simulation"] == "pass" or item["simulation_reason"].startswith("upstream")
    for item in by_status["patched"] + [i for i in by_status["unchanged"] if i["simulation"] == "pass"]:
        assert item["simulation"] == "pass", item
        evidence = json.loads((tmp_path / "simulation" / (item["id"].replace("/", "__") + ".json")).read_text())
        assert evidence["status"] == "pass" and evidence["old_rows"] == evidence["new_rows"]
    for item in by_status["escalated"]:
        assert item["simulation"] == "skipped"
    summary = json.loads((tmp_path / "summary.json").read_text())
    from skein.statuses import of_plan

    expected = {}
    for item in plan["items"]:  # the summary speaks skein.statuses, the plan its own words
        status = str(of_plan(item["status"], item["simulation"]))
        expected[status] = expected.get(status, 0) + 1
    assert summary["by_status"] == dict(sorted(expected.items()))
    assert sum(sum(c.values()) for c in summary["by_owner"].values()) == len(plan["items"])
    first = by_status["patched"][0]["id"].replace("/", "__")
    markdown = (tmp_path / "evidence" / f"{first}.md").read_text()
    assert "## Patch (rule agent)" in markdown and "```diff" in markdown and "**pass**" in markdown
    assert "<table>" in (tmp_path / "summary.html").read_text()
    # Waves (rollout.waves: canary 10%, everyone): every applied consumer has one, canary first,
    # and nothing lands before what it reads.
    waves = {json.loads(p.read_text())["id"]: json.loads(p.read_text())["wave"]
             for p in (tmp_path / "evidence").glob("*.json")}
    applied = [i for i in plan["items"] if i["status"] == "patched"
               or (i["status"] == "unchanged" and i["simulation"] == "pass")]
    assert all(waves[i["id"]] in ("canary", "everyone") for i in applied)
    assert 1 <= sum(waves[i["id"]] == "canary" for i in applied) <= -(-len(applied) // 10)
    rank = {"canary": 0, "everyone": 1}
    impacted = {c["id"]: c for c in discovery["consumers"]}
    for item in applied:
        for up in impacted[item["id"]]["upstream"]:
            if waves.get(up):
                assert rank[waves[up]] <= rank[waves[item["id"]]]
    assert set(summary["by_wave"]) == {"canary", "everyone"}
    assert plan["counts"]["patched"] >= 15
    # Every consumer discovery escalated stays escalated; transitive ones are unchanged.
    for c in discovery["consumers"]:
        item = next(i for i in plan["items"] if i["id"] == c["id"])
        if c["status"] == "escalate":
            assert item["status"] == "escalated" and item["reason"]
        if c["status"] == "verify":
            assert item["status"] == "unchanged"
    for item in by_status["patched"]:
        diff = (tmp_path / item["patch_file"]).read_text()
        assert diff.startswith(f"--- a/{item['id']}\n+++ b/{item['id']}\n")
        assert "analytics_v2" in diff.lower()
        patched = (tmp_path / "patched" / item["id"].replace("/", "__")).read_text()
        assert "analytics.plays" not in patched.lower().replace("analytics.plays_", "")
    assert "escalate" in out


def test_rewrite_cli_prints_text_or_diff(fleet, capsys):
    root, campaign = fleet
    file = next(p for p in sorted((root / "repos" / "growth-analytics").rglob("*.sql"))
                if "analytics.plays" in p.read_text() and "legacy_flag" not in p.read_text()
                and "USING" not in p.read_text().upper())
    assert main(["rewrite", str(campaign), str(file)]) == 0
    text = capsys.readouterr().out
    assert "analytics_v2.plays" in text and text != file.read_text()
    assert main(["rewrite", str(campaign), str(file), "--diff"]) == 0
    diff = capsys.readouterr().out
    assert diff.startswith("--- a/") and "+" in diff


def test_rewrite_cli_escalation_exit_code(fleet, tmp_path, capsys):
    _, campaign = fleet
    file = tmp_path / "flag.sql"
    file.write_text("SELECT play_id FROM analytics.plays WHERE legacy_flag\n")
    assert main(["rewrite", str(campaign), str(file)]) == 3
    err = capsys.readouterr().err
    assert "escalated: line 1: uses legacy_flag, which the campaign drops" in err
    assert main(["rewrite", str(campaign), str(tmp_path / "missing.sql")]) == 2


def _refusing_model():
    from pydantic_ai.messages import ModelResponse, ToolCallPart
    from pydantic_ai.models.function import FunctionModel

    prompts = []

    def answer(messages, info):
        prompts.append(messages[-1].parts[-1].content)
        args = {"text": "", "explanation": "-", "refusal": "cannot do this faithfully"}
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, args)])
    return FunctionModel(answer), prompts


def test_plan_sends_rule_escalations_to_the_llm_agent(fleet, tmp_path):
    from skein.rewrite.request import Escalation
    from skein.spec import load_campaign

    _, campaign_path = fleet
    campaign_file = campaign_path.parent / "with-llm.yaml"
    campaign_file.write_text(campaign_path.read_text().replace("campaign: plays-v2", "campaign: plays-v2-llm")
                             + "agents:\n  llm: {enabled: true, attempts: 2}\n")
    try:
        model, prompts = _refusing_model()
        ctx, _ = rewritten(load_campaign(campaign_file), tmp_path, llm_model=model)
    finally:
        campaign_file.unlink()
    results = ctx.results()
    llm_answered = {cid for cid, r in results.items() if r.agent == "llm"}
    assert llm_answered and all(isinstance(results[cid], Escalation) for cid in llm_answered)
    assert len(prompts) == len(llm_answered)  # a refusal ends the loop at once
    for cid in llm_answered:
        assert any(f"<<<BEGIN {cid}>>>" in p and "Why the rule-based agent could not do it" in p
                   for p in prompts)
    assert sorted(p.name for p in (tmp_path / "llm").iterdir()) == sorted(
        cid.replace("/", "__") + ".json" for cid in llm_answered)
    for cid in llm_answered:  # the transcript keeps the hint the LLM agent was given
        transcript = json.loads((tmp_path / "llm" / (cid.replace("/", "__") + ".json")).read_text())
        assert transcript["hint"] and any(transcript["hint"] in p for p in prompts)


def test_llm_agent_fixes_a_macro_call_the_rules_escalate(fleet):
    """The stand-in model answers what a good model would: the rules' rewrite plus the macro
    argument; the shared gate (scope check on the rendered dbt SQL) accepts it."""
    from pydantic_ai.messages import ModelResponse, ToolCallPart
    from pydantic_ai.models.function import FunctionModel

    from skein.rewrite.request import Escalation, Patch
    from skein.agents.gate import default_gate
    from skein.agents.llm import LLMAgent
    from skein.agents.requests import request_for
    from skein.agents.rule import rewrite
    from skein.catalog import build_catalog
    from skein.discovery import connect
    from skein.spec import load_campaign

    _, campaign_path = fleet
    campaign = load_campaign(campaign_path)
    catalog = build_catalog(campaign, connect(campaign), workers=1)
    consumer = next(c for c in catalog.consumers
                    if c.kind == "dbt_model" and "ms_to_seconds('ms_played')" in c.file.read_text())
    request = request_for(campaign, catalog, consumer)
    escalation = rewrite(request)
    assert isinstance(escalation, Escalation) and "inside a Jinja expression" in escalation.reason

    macro, expanded = "{{ ms_to_seconds('ms_played') }}", "(ms_played / 1000.0)"
    plain = rewrite(request.model_copy(update={"text": request.text.replace(macro, expanded)}))
    assert isinstance(plain, Patch), plain.reason
    good = plain.text.replace("(CAST(duration_s * 1000 AS BIGINT) / 1000.0)",
                              "{{ ms_to_seconds('CAST(duration_s * 1000 AS BIGINT)') }}")
    answers = iter([{"text": request.text.replace(macro, "{{ ms_to_seconds('duration_s') }}"),
                     "explanation": "seconds already"},  # wrong: the gate must reject it
                    {"text": good, "explanation": "macro argument and source moved"}])

    def answer(messages, info):
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, next(answers))])

    result, attempts = LLMAgent(FunctionModel(answer), gate=default_gate(), attempts=3).rewrite(
        request, hint=escalation.reason)
    assert isinstance(result, Patch), [a.verdict.feedback for a in attempts if a.verdict]
    assert result.agent == "llm" and result.text == good
    assert len(attempts) == 2 and not attempts[0].verdict.passed
    assert "scope" in attempts[0].verdict.failed


def test_simulation_refutes_a_wrong_patch(fleet, tmp_path):
    """A patch that passes no data check (here: a join on the wrong key, written by hand)
    is caught by the dry run with the differing rows, and never counts as patched."""
    from skein.rewrite.request import Patch
    from skein.spec import load_campaign

    _, campaign_path = fleet
    ctx, _ = rewritten(load_campaign(campaign_path), tmp_path)
    victim, patch = next((cid, r) for cid, r in ctx.results().items()
                         if isinstance(r, Patch) and "GROUP BY" in r.text.upper()
                         and "account_id" in r.text and "JOIN" not in r.text.upper())
    wrong = patch.text.replace("account_id", "track_id", 1)  # a plausible, wrong mapping
    assert wrong != patch.text
    refute_patch(ctx, victim, wrong)


def test_a_refuted_patch_goes_back_to_the_llm_agent(fleet, tmp_path):
    """The dry run refutes a patch; the LLM agent gets the verdict as its hint, answers a
    correct patch (the stand-in model knows the right text), and the re-run passes."""
    from pydantic_ai.messages import ModelResponse, ToolCallPart
    from pydantic_ai.models.function import FunctionModel

    from skein.pipeline import simulate_consumers, summarize
    from skein.rewrite.request import Patch
    from skein.spec import load_campaign

    _, campaign_path = fleet
    campaign_file = campaign_path.parent / "retry.yaml"
    campaign_file.write_text(campaign_path.read_text().replace("campaign: plays-v2", "campaign: plays-v2-retry")
                             + "agents:\n  llm: {enabled: true, attempts: 2}\n")
    try:
        campaign = load_campaign(campaign_file)
        ctx, ids = rewritten(campaign, tmp_path, llm_model=_refusing_model()[0])
        victim, good = next((cid, r) for cid, r in ctx.results().items() if isinstance(r, Patch)
                            and r.agent == "rule" and "account_id" in r.text and "JOIN" not in r.text.upper())
        ctx.files.write_agent_result(victim, good.model_copy(
            update={"text": good.text.replace("account_id", "track_id", 1)}))
        hints = []

        def answer(messages, info):
            hints.append(messages[-1].parts[-1].content)
            return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name,
                                                     {"text": good.text, "explanation": "fixed"})])

        statuses = simulate_consumers(ctx, ids, llm_model=FunctionModel(answer))
        plan = summarize(ctx).plan
    finally:
        campaign_file.unlink()
    assert statuses[victim] == "pass"
    assert ctx.results()[victim].agent == "llm"
    assert any("failed its dry run on data" in h for h in hints)
    retry = json.loads((tmp_path / "retry" / (victim.replace("/", "__") + ".json")).read_text())
    assert retry["refuted_by"].startswith("a patch failed its dry run on data (fail)")
    assert next(i for i in plan.items if i.id == victim).status == "patched"
    # the gate's own dry run judged the answer on the warehouse's samples (not skipped)
    transcript = json.loads((tmp_path / "llm" / (victim.replace("/", "__") + ".retry.json")).read_text())
    checks = transcript["attempts"][-1]["verdict"]["results"]
    assert [(c["name"], c["passed"], c["skipped"]) for c in checks][-1] == ("dry_run", True, False), checks
