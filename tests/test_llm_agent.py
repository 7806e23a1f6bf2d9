"""The LLM agent's loop, with pydantic-ai's own FunctionModel/TestModel (no network).

A scripted model answers in turn; the gate (the dry run on samples, plus small checks)
judges every answer; rejected answers' feedback must reach the next prompt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from skein.rewrite.request import Escalation, Patch
from skein.agents.transcript import Evidence
from skein.agents.dry_run import DryRun
from skein.agents.gate import Gate, default_gate, locality_check, unchanged_check
from skein.agents.llm import INSTRUCTIONS, LLMAgent, build_prompt, changes_from_diff
from test_gate import (
    CORRECT,
    ORIGINAL,
    OUTPUT_RENAMED,
    PANDAS,
    PANDAS_MIGRATED,
    SAMPLES,
    UNRELATED_TOUCHED,
    python_request,
    request,
)

HINT = "line 7: user_id of analytics.users has the same name as a renamed column (ambiguous)"
DRY_RUN_GATE = Gate([unchanged_check, DryRun(SAMPLES)])


class Script:
    """A FunctionModel answering ``answers`` in turn (the last one repeats); records what it saw."""

    def __init__(self, *answers):
        self.answers = answers
        self.prompts: list[str] = []
        self.instructions: list[str | None] = []
        self.model = FunctionModel(self.respond, model_name="scripted")

    def respond(self, messages, info: AgentInfo) -> ModelResponse:
        self.prompts.append(messages[-1].parts[-1].content)
        self.instructions.append(info.instructions)
        answer = self.answers[min(len(self.prompts), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, str):  # plain text instead of the structured output
            return ModelResponse(parts=[TextPart(answer)])
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, answer)])


def answer(text: str, explanation: str = "read analytics_v2.plays; alias account_id back to user_id"):
    return {"text": text, "explanation": explanation}


# ---- the loop ------------------------------------------------------------------------------------

def test_wrong_then_corrected_answer_is_accepted_with_both_attempts_recorded():
    script = Script(answer(UNRELATED_TOUCHED), answer(CORRECT))
    result, attempts = LLMAgent(script.model, gate=DRY_RUN_GATE).rewrite(request(), hint=HINT)

    assert isinstance(result, Patch) and result.agent == "llm"
    assert result.text == CORRECT and result.original == ORIGINAL
    assert [a.number for a in attempts] == [1, 2]
    assert [a.accepted for a in attempts] == [False, True]
    first = attempts[0].verdict
    assert first.failed == ["dry_run"] and "account_id" in first.feedback  # u.account_id does not exist
    # the second prompt quotes the first verdict's feedback and the rejected diff
    assert first.feedback in attempts[1].prompt
    assert "Attempt 1 was rejected by the verifier:" in attempts[1].prompt
    assert "+JOIN analytics.users AS u ON u.account_id = p.account_id" in attempts[1].prompt
    assert "rejected" not in attempts[0].prompt
    # what was recorded is exactly what the model saw
    assert script.prompts == [a.prompt for a in attempts]
    assert script.instructions == [INSTRUCTIONS.strip()] * 2
    assert {a.model for a in attempts} == {"scripted"}


def test_renamed_output_column_is_rejected_with_the_columns_named():
    script = Script(answer(OUTPUT_RENAMED), answer(CORRECT))
    result, attempts = LLMAgent(script.model, gate=DRY_RUN_GATE).rewrite(request())
    assert isinstance(result, Patch) and len(attempts) == 2
    assert ("output columns differ: expected ['user_id', 'country', 'total_ms'], "
            "got ['account_id', 'country', 'total_ms']") in attempts[1].prompt


@pytest.mark.parametrize("n", [1, 2, 4])
def test_a_model_never_right_escalates_after_n_attempts(n):
    script = Script(answer(OUTPUT_RENAMED))
    result, attempts = LLMAgent(script.model, gate=DRY_RUN_GATE, attempts=n).rewrite(request())

    assert isinstance(result, Escalation) and result.agent == "llm"
    assert result.consumer_id == "finance/queries/listening.sql"
    assert result.reason.startswith(f"no answer passed the gate in {n} attempt(s); last: - dry_run:")
    assert len(script.prompts) == n and len(attempts) == n
    assert all(a.verdict is not None and not a.verdict.passed for a in attempts)
    assert all(a.answer.text == OUTPUT_RENAMED for a in attempts)


def test_attempts_default_to_three_and_must_be_positive():
    script = Script(answer(OUTPUT_RENAMED))
    _, attempts = LLMAgent(script.model, gate=DRY_RUN_GATE).rewrite(request())
    assert len(attempts) == 3
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="attempts must be a positive integer"):
            LLMAgent(script.model, gate=DRY_RUN_GATE, attempts=bad)
    with pytest.raises(TypeError, match="gate must be"):
        LLMAgent(script.model, gate=[unchanged_check])


def test_a_refusal_escalates_at_once():
    script = Script({"text": "", "explanation": "",
                     "refusal": "the report filters on legacy_flag, which analytics_v2.plays drops"})
    result, attempts = LLMAgent(script.model, gate=DRY_RUN_GATE).rewrite(request())
    assert isinstance(result, Escalation)
    assert result.reason == ("the model declined: the report filters on legacy_flag, "
                             "which analytics_v2.plays drops")
    assert len(attempts) == 1 and attempts[0].verdict is None and attempts[0].answer.refusal


def test_a_failed_model_call_escalates_at_once():
    script = Script(ModelHTTPError(status_code=429, model_name="scripted", body={"error": "slow down"}))
    result, attempts = LLMAgent(script.model, gate=DRY_RUN_GATE).rewrite(request())
    assert isinstance(result, Escalation)
    assert result.reason.startswith("the model call failed on attempt 1: ModelHTTPError")
    assert len(attempts) == 1 and attempts[0].answer is None and "429" in attempts[0].error


def test_an_unusable_answer_uses_an_attempt_and_is_named_in_the_next_prompt():
    chatty = "Sure! Here is the SQL you asked for."
    script = Script(chatty, chatty, answer(CORRECT))  # pydantic-ai retries once inside a run
    result, attempts = LLMAgent(script.model, gate=DRY_RUN_GATE).rewrite(request())
    assert isinstance(result, Patch)
    assert len(attempts) == 2 and attempts[0].error and attempts[0].verdict is None
    assert attempts[0].error.startswith("UnexpectedModelBehavior:")
    assert "Attempt 1 gave no usable answer: UnexpectedModelBehavior" in attempts[1].prompt
    assert script.prompts[0] == attempts[0].prompt and script.prompts[2] == attempts[1].prompt


def test_fenced_answer_without_final_newline_is_normalised_but_recorded_raw():
    raw = "```sql\n" + CORRECT.rstrip("\n") + "\n```"
    result, attempts = LLMAgent(Script(answer(raw)).model, gate=DRY_RUN_GATE).rewrite(request())
    assert isinstance(result, Patch) and result.text == CORRECT
    assert attempts[0].answer.text == raw


def test_patch_changes_come_from_the_line_diff():
    script = Script(answer(CORRECT, "moved to v2"))
    result, _ = LLMAgent(script.model, gate=DRY_RUN_GATE).rewrite(request())
    assert [(c.line, c.before.strip(), c.after.strip()) for c in result.changes] == [
        (3, "p.user_id,", "p.account_id AS user_id,"),
        (5, "SUM(p.ms_played) AS total_ms\nFROM analytics.plays AS p\n"
            "JOIN analytics.users AS u ON u.user_id = p.user_id\nGROUP BY p.user_id, u.country",
         "SUM(CAST(p.duration_s * 1000 AS BIGINT)) AS total_ms\nFROM analytics_v2.plays AS p\n"
            "JOIN analytics.users AS u ON u.user_id = p.account_id\nGROUP BY p.account_id, u.country"),
    ]
    assert {c.why for c in result.changes} == {"moved to v2"}
    assert "+    p.account_id AS user_id," in result.diff


def test_changes_from_diff_handles_pure_insertions_and_deletions():
    changes = changes_from_diff("a\nb\nc\n", "a\nc\nd\n", "x")
    assert [(c.line, c.before, c.after) for c in changes] == [(2, "b", ""), (4, "", "d")]


# ---- prompts -------------------------------------------------------------------------------------

def test_prompt_contains_mapping_schemas_hint_and_the_consumer_verbatim():
    prompt = build_prompt(request(), hint=HINT)
    for line in ("Consumer: finance/queries/listening.sql (duckdb SQL)",
                 "Source dataset (being replaced): analytics.plays",
                 "Target dataset (its replacement): analytics_v2.plays",
                 "  user_id -> account_id",
                 "  ms_played -> CAST(duration_s * 1000 AS BIGINT)",
                 "  legacy_flag -> (none: the target has no replacement)",
                 "Schema of analytics.plays (source):\n  user_id BIGINT\n  ms_played BIGINT\n"
                 "  legacy_flag BOOLEAN",
                 "Schema of analytics_v2.plays (target):\n  account_id BIGINT\n  duration_s DOUBLE",
                 f"Why the rule-based agent could not do it: {HINT}"):
        assert line in prompt
    assert prompt.endswith(f"<<<BEGIN finance/queries/listening.sql>>>\n{ORIGINAL}"
                           "<<<END finance/queries/listening.sql>>>")
    assert "rejected" not in prompt


def test_prompt_lists_dbt_relations_and_names_python_consumers():
    dbt = request("select user_id from {{ source('analytics', 'plays') }}\n",
                  dbt_relations={"source('analytics','plays')": "analytics.plays"})
    assert "dbt relations declared by the project:\n  source('analytics','plays') = analytics.plays" \
        in build_prompt(dbt)
    assert build_prompt(python_request()).startswith(
        "Consumer: reports/weekly.py (Python (SQL in it is duckdb))")


# ---- other kinds, models, evidence ---------------------------------------------------------------

def test_python_consumer_goes_through_locality_instead_of_scope():
    touched = PANDAS_MIGRATED.replace(".head(10)", ".head(20)")
    script = Script(answer(touched, "v2"), answer(PANDAS_MIGRATED, "v2"))
    result, attempts = LLMAgent(script.model, gate=default_gate(SAMPLES)).rewrite(python_request())
    assert isinstance(result, Patch) and result.original == PANDAS and len(attempts) == 2
    assert attempts[0].verdict.failed == ["locality"]
    assert "line 7 changed but names nothing this migration is about" in attempts[1].prompt
    assert [(r.name, r.skipped) for r in attempts[1].verdict.results] == [
        ("unchanged", False), ("scope", True), ("locality", False), ("dry_run", True)]


def test_test_model_smoke():
    good = LLMAgent(TestModel(custom_output_args=answer(CORRECT)), gate=DRY_RUN_GATE)
    result, attempts = good.rewrite(request())
    assert isinstance(result, Patch) and len(attempts) == 1 and attempts[0].model == "test"
    assert attempts[0].usage["requests"] == 1 and attempts[0].usage["input_tokens"] > 0

    # TestModel's default answer ('a' for every string) is never right
    result, attempts = LLMAgent(TestModel(), gate=Gate([unchanged_check, locality_check]),
                                attempts=2).rewrite(request())
    assert isinstance(result, Escalation) and len(attempts) == 2


def test_model_by_name():
    agent = LLMAgent("test", gate=DRY_RUN_GATE)
    assert agent.model_name == "test"
    assert "LLMAgent('test', attempts=3" in repr(agent)
    assert LLMAgent(Script().model, gate=DRY_RUN_GATE).model_name == "function:scripted"


def test_evidence_records_prompts_answers_verdicts_and_timings_as_json():
    agent = LLMAgent(Script(answer(OUTPUT_RENAMED), answer(CORRECT)).model, gate=DRY_RUN_GATE)
    result, attempts = agent.rewrite(request(), hint=HINT)
    evidence = agent.evidence(result, attempts, hint=HINT)

    data = json.loads(evidence.to_json())
    assert data["outcome"] == "patch" and data["agent"] == "llm"
    assert data["model"] == "function:scripted" and data["hint"] == HINT
    assert data["instructions"] == INSTRUCTIONS
    assert data["result"]["text"] == CORRECT
    assert [a["verdict"]["passed"] for a in data["attempts"]] == [False, True]
    assert data["attempts"][0]["verdict"]["results"][1]["feedback"].startswith("output columns differ")
    assert data["attempts"][1]["prompt"] == attempts[1].prompt
    assert data["attempts"][0]["answer"] == {"text": OUTPUT_RENAMED, "refusal": None,
                                             "explanation": answer("")["explanation"]}
    assert all(a["model_s"] >= 0 and a["gate_s"] > 0 for a in data["attempts"])
    assert data["duration_s"] > 0 and data["started_at"]
    assert Evidence.model_validate_json(evidence.to_json()) == evidence


def test_evidence_of_an_escalation():
    agent = LLMAgent(Script(answer(OUTPUT_RENAMED)).model, gate=DRY_RUN_GATE, attempts=2)
    result, attempts = agent.rewrite(request())
    data = json.loads(agent.evidence(result, attempts).to_json())
    assert data["outcome"] == "escalation" and data["result"]["reason"] == result.reason
    assert len(data["attempts"]) == 2


def test_default_gate_end_to_end_with_the_rule_agents_scope_check():
    script = Script(answer(UNRELATED_TOUCHED), answer(CORRECT))
    result, attempts = LLMAgent(script.model, gate=default_gate(SAMPLES)).rewrite(request(), hint=HINT)
    assert isinstance(result, Patch) and result.text == CORRECT
    assert attempts[0].verdict.failed == ["scope", "dry_run"]
    assert attempts[0].verdict.feedback in attempts[1].prompt


# ---- Airflow: the model from a pydanticai connection (plugins/skein_airflow/llm.py) -------------

AIRFLOW_PROBE = """
import json
from airflow.sdk.exceptions import AirflowNotFoundException
from pydantic_ai.models.test import TestModel
from skein.rewrite.request import RewriteRequest
from skein.agents.gate import Gate, unchanged_check
from skein.agents.llm import LLMAgent
from skein_airflow.llm import model_from_connection

out = {}
model = model_from_connection("skein_llm")
out["type"] = type(model).__name__
req = RewriteRequest(consumer_id="q.sql", text="SELECT 1\\n", dialect="duckdb", source="a.b",
                     target="c.d", columns={}, schemas={})
result, attempts = LLMAgent(model, gate=Gate([unchanged_check]), attempts=1).rewrite(req)
out["answered_by"] = attempts[0].model
out["override"] = type(model_from_connection("no_model", model_id="test")).__name__
for conn_id in ("wrong_type", "no_model", "missing", "openai"):
    try:
        model_from_connection(conn_id)
        out[conn_id] = "no error"
    except (ValueError, ImportError, AirflowNotFoundException) as exc:
        out[conn_id] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def test_model_from_an_airflow_connection(tmp_path):
    """Airflow reads its configuration once per process: run in a fresh one, connections in env."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(root / "include"), str(root / "plugins")]),
           "AIRFLOW_CONN_SKEIN_LLM": json.dumps({"conn_type": "pydanticai", "extra": {"model": "test"}}),
           "AIRFLOW_CONN_NO_MODEL": json.dumps({"conn_type": "pydanticai"}),
           "AIRFLOW_CONN_WRONG_TYPE": json.dumps({"conn_type": "postgres", "host": "db"}),
           "AIRFLOW_CONN_OPENAI": json.dumps({"conn_type": "pydanticai", "password": "sk-not-a-real-key",
                                              "extra": {"model": "openai:gpt-4.1"}})}
    proc = subprocess.run([sys.executable, "-c", AIRFLOW_PROBE], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["type"] == "TestModel" and out["answered_by"] == "test" and out["override"] == "TestModel"
    assert out["wrong_type"].startswith("ValueError: Connection 'wrong_type' has type 'postgres'")
    assert out["no_model"].startswith("ValueError: No model specified for connection 'no_model'")
    assert out["missing"].startswith("AirflowNotFoundException")
    try:
        import openai  # noqa: F401
    except ImportError:  # the provider package is not installed here: the error names the connection
        assert out["openai"].startswith("ImportError: connection 'openai' (model 'openai:gpt-4.1'): ")
    else:  # building the model makes no request
        assert out["openai"] == "no error"
