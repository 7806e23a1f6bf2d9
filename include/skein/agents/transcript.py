"""What an agent did for one consumer, as a JSON-serialisable record for review and audit.

Every attempt keeps its prompt, the model's answer, the gate's verdict and timings;
the evidence adds the outcome and which model answered. The simulation stores it
next to the patch.

>>> from skein.rewrite.request import Escalation
>>> from skein.agents.gate import CheckResult, GateVerdict
>>> attempt = Attempt(number=1, prompt="Rewrite ...", answer=Answer(text="SELECT 1", explanation="x"),
...                   verdict=GateVerdict(results=[CheckResult(name="scope", passed=False,
...                                                            feedback="output renamed")]),
...                   model="test", started_at="2026-01-01T00:00:00Z", model_s=0.5, gate_s=0.25)
>>> evidence = Evidence.of(Escalation(consumer_id="r/q.sql", agent="llm", reason="gave up"), [attempt],
...                        model="test")
>>> evidence.outcome, evidence.duration_s, evidence.attempts[0].accepted
('escalation', 0.75, False)
>>> Evidence.model_validate_json(evidence.to_json()) == evidence
True
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from skein.rewrite.request import Escalation, Patch
from skein.agents.gate import GateVerdict


class Answer(BaseModel):
    """What the model proposed (the LLM agent's structured output, as recorded)."""

    model_config = ConfigDict(frozen=True)
    text: str
    explanation: str
    refusal: str | None = None


class Attempt(BaseModel):
    """One try: the prompt sent, the answer, the verdict. ``prompt`` and ``answer`` are
    None for agents without a model (the rule agent records only its verdict)."""

    model_config = ConfigDict(frozen=True)
    number: int  # 1-based
    prompt: str | None = None
    answer: Answer | None = None
    verdict: GateVerdict | None = None  # None: nothing to verify (refusal, model error)
    error: str | None = None  # the model call failed or its output was unusable
    model: str | None = None  # the model that answered, as its response names it
    started_at: datetime
    model_s: float = 0.0
    gate_s: float = 0.0
    usage: dict[str, int] = Field(default_factory=dict)  # input_tokens, output_tokens, requests

    @property
    def accepted(self) -> bool:
        return self.verdict is not None and self.verdict.passed


class Evidence(BaseModel):
    """Everything one agent did for one consumer."""

    model_config = ConfigDict(frozen=True)
    consumer_id: str
    agent: str
    outcome: Literal["patch", "escalation"]
    result: Patch | Escalation = Field(discriminator="kind")
    model: str | None = None  # as configured (e.g. "openai:gpt-4.1"); attempts name who answered
    instructions: str | None = None  # the system prompt, once (attempts hold the user prompts)
    hint: str | None = None  # why the previous agent escalated
    attempts: list[Attempt]
    started_at: datetime | None
    duration_s: float

    @classmethod
    def of(cls, result: Patch | Escalation, attempts: list[Attempt], *, model: str | None = None,
           instructions: str | None = None, hint: str | None = None) -> Evidence:
        return cls(consumer_id=result.consumer_id, agent=result.agent, outcome=result.kind,
                   result=result, model=model, instructions=instructions, hint=hint,
                   attempts=attempts, started_at=attempts[0].started_at if attempts else None,
                   duration_s=round(sum(a.model_s + a.gate_s for a in attempts), 6))

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)
