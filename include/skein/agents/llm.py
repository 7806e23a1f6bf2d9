"""The LLM agent: for consumers the rule agent escalates, ask a model for a patch.

Text in, text out, whatever the consumer's kind (SQL, dbt, Python): the prompt carries
the change (column mapping, both schemas), the consumer and why the rule agent gave
up; the answer is a whole new file. Nothing is accepted on the model's word: each
answer goes through the same ``Gate`` as the rule agent's patches, and a rejected
answer's feedback goes into the next prompt, for at most ``attempts`` model runs.
Each attempt is a fresh run with a self-contained prompt, so the recorded prompt is
exactly what the model saw.

The model is a pydantic-ai ``Model`` or a model name (``"openai:gpt-4.1"``); in
Airflow, ``skein_airflow.llm.model_from_connection`` builds it from a ``pydanticai``
connection. This module never opens a network connection itself.

>>> from pydantic_ai.models.test import TestModel
>>> from skein.rewrite.request import RewriteRequest
>>> from skein.agents.gate import Gate, unchanged_check
>>> req = RewriteRequest(consumer_id="r/q.sql", text="SELECT user_id FROM analytics.plays\\n",
...                      dialect="duckdb", source="analytics.plays", target="analytics_v2.plays",
...                      columns={"user_id": "account_id"},
...                      schemas={"analytics.plays": {"user_id": "BIGINT"},
...                               "analytics_v2.plays": {"account_id": "BIGINT"}})
>>> answer = {"text": "SELECT account_id AS user_id FROM analytics_v2.plays",
...           "explanation": "read the target"}
>>> agent = LLMAgent(TestModel(custom_output_args=answer), gate=Gate([unchanged_check]))
>>> patch, attempts = agent.rewrite(req, hint="rule agent: unsupported construct")
>>> patch.agent, len(attempts), patch.text
('llm', 1, 'SELECT account_id AS user_id FROM analytics_v2.plays\\n')
>>> [(c.line, c.before, c.why) for c in patch.changes]
[(1, 'SELECT user_id FROM analytics.plays', 'read the target')]
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from skein.rewrite.request import Change, Escalation, Patch, RewriteRequest, unified_diff
from skein.agents.transcript import Answer, Attempt, Evidence
from skein.agents.gate import Gate, consumer_kind

if TYPE_CHECKING:
    from pydantic_ai.models import Model

INSTRUCTIONS = """\
You migrate one consumer (a SQL file, a dbt model, a warehouse view or Python code) from a
dataset that is being replaced (the source) to its replacement (the target).

Rules:
1. Change only what refers to the source dataset: its name, and its columns as the column
   mapping says. Columns not in the mapping keep their names. Do not touch other tables.
2. Keep the consumer's output exactly: the same output column names, in the same order, and
   the same rows. Where a mapped column is output without an alias, alias its new expression
   back to the old name.
3. Leave everything else byte-identical: comments, whitespace, line breaks, keyword case,
   quoting, Jinja ({{ ... }}, {% ... %}) and code that does not read the source.
4. Put the whole new file in `text`: not a diff, not a fragment, no Markdown fences.
5. Say what you changed and why in one or two sentences in `explanation`.
6. If the consumer cannot be migrated faithfully (for example it needs a column the target
   no longer has), leave `text` empty and give the reason in `refusal`. Do not guess.

A verifier checks every answer. If a previous answer was rejected, the prompt quotes the
verifier's feedback: fix exactly what it names and keep everything else.
"""


class ProposedPatch(BaseModel):
    """The model's structured answer."""

    text: str = Field("", description="The whole consumer file after the change; empty with a refusal.")
    explanation: str = Field(description="One or two sentences: what changed and why.")
    refusal: str | None = Field(None, description="Set only when the change cannot be made: why not.")


class LLMAgent:
    """Propose, verify, retry with feedback; accept only what the gate passes.

    ``attempts`` bounds the model runs per consumer. A refusal or a failed model call
    (network, quota, authentication) ends the loop at once with an ``Escalation``; an
    unusable answer (output that does not validate) uses up an attempt. Configuration
    errors (unknown model, missing provider package) raise.
    """

    name = "llm"

    def __init__(self, model: Model | str, *, gate: Gate, attempts: int = 3,
                 model_settings: Mapping[str, Any] | None = None, instructions: str = INSTRUCTIONS):
        from pydantic_ai import Agent

        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be a positive integer, got {attempts!r}")
        if not isinstance(gate, Gate):
            raise TypeError(f"gate must be a skein.agents.gate.Gate, got {type(gate).__name__}")
        self.gate = gate
        self.attempts = attempts
        self.instructions = instructions
        self.model_name = model if isinstance(model, str) else f"{model.system}:{model.model_name}"
        self._agent = Agent(model, output_type=ProposedPatch, instructions=instructions,
                            model_settings=dict(model_settings) if model_settings else None,
                            name="skein-llm-rewrite")

    def rewrite(self, request: RewriteRequest, hint: str | None = None,
                ) -> tuple[Patch | Escalation, list[Attempt]]:
        """A gate-approved ``Patch(agent="llm")``, or an ``Escalation``; and every attempt."""
        from pydantic_ai.exceptions import AgentRunError, UnexpectedModelBehavior

        attempts: list[Attempt] = []
        for number in range(1, self.attempts + 1):
            prompt = build_prompt(request, hint, attempts[-1] if attempts else None)
            started_at, clock = datetime.now(UTC), time.perf_counter()
            record = {"number": number, "prompt": prompt, "started_at": started_at}
            try:
                run = self._agent.run_sync(prompt)
            except UnexpectedModelBehavior as exc:  # unusable output: counts as an attempt
                attempts.append(Attempt(**record, error=_describe(exc), model_s=_since(clock)))
                continue
            except AgentRunError as exc:  # network, quota, auth, usage limit: stop here
                attempts.append(Attempt(**record, error=_describe(exc), model_s=_since(clock)))
                return self._escalate(request, f"the model call failed on attempt {number}: "
                                               f"{_describe(exc)}"), attempts
            model_s = _since(clock)
            output: ProposedPatch = run.output
            answer = Answer(text=output.text, explanation=output.explanation, refusal=output.refusal)
            record.update(answer=answer, model=run.response.model_name, model_s=model_s,
                          usage=_usage(run.usage))
            if output.refusal and output.refusal.strip():
                attempts.append(Attempt(**record))
                return self._escalate(request, f"the model declined: {output.refusal.strip()}"), attempts
            text = normalise_answer(request.text, output.text)
            clock = time.perf_counter()
            verdict = self.gate.verify(request, text)
            attempts.append(Attempt(**record, verdict=verdict, gate_s=_since(clock)))
            if verdict.passed:
                return Patch(consumer_id=request.consumer_id, agent=self.name, original=request.text,
                             text=text, changes=changes_from_diff(request.text, text,
                                                                  output.explanation)), attempts
        last = attempts[-1]
        why = last.verdict.feedback if last.verdict is not None else last.error
        return self._escalate(request, f"no answer passed the gate in {len(attempts)} attempt(s); "
                                       f"last: {why}"), attempts

    def evidence(self, result: Patch | Escalation, attempts: list[Attempt],
                 hint: str | None = None) -> Evidence:
        """The JSON-serialisable record of one ``rewrite``."""
        return Evidence.of(result, attempts, model=self.model_name, instructions=self.instructions,
                           hint=hint)

    def _escalate(self, request: RewriteRequest, reason: str) -> Escalation:
        return Escalation(consumer_id=request.consumer_id, agent=self.name, reason=reason)

    def __repr__(self) -> str:
        return f"LLMAgent({self.model_name!r}, attempts={self.attempts}, gate={self.gate!r})"


def build_prompt(request: RewriteRequest, hint: str | None = None,
                 previous: Attempt | None = None) -> str:
    """The user prompt of one attempt: the change, both schemas, the hint, the previous
    verdict's feedback, and the consumer verbatim between markers."""
    kind = consumer_kind(request)
    what = f"{request.dialect} SQL" if kind == "sql" else f"Python (SQL in it is {request.dialect})"
    parts = [f"Consumer: {request.consumer_id} ({what})",
             f"Source dataset (being replaced): {request.source}",
             f"Target dataset (its replacement): {request.target}",
             "",
             f"Column mapping: old column of {request.source} -> expression over {request.target} "
             f"({request.columns_dialect} SQL):"]
    for old, new in request.columns.items():
        parts.append(f"  {old} -> {new if new is not None else '(none: the target has no replacement)'}")
    parts.append("Columns not listed keep their name.")
    for label, dataset in (("source", request.source), ("target", request.target)):
        parts += ["", f"Schema of {dataset} ({label}):"]
        columns = request.schemas.get(dataset)
        parts += [f"  {c} {t}" for c, t in columns.items()] if columns else ["  (unknown)"]
    if request.dbt_relations:
        parts += ["", "dbt relations declared by the project:"]
        parts += [f"  {call} = {relation}" for call, relation in sorted(request.dbt_relations.items())]
    if hint:
        parts += ["", f"Why the rule-based agent could not do it: {hint}"]
    if previous is not None:
        parts += ["", *_previous_section(request, previous)]
    text = request.text if request.text.endswith("\n") else request.text + "\n"
    parts += ["", "The consumer, exactly as on disk, between the markers:",
              f"<<<BEGIN {request.consumer_id}>>>", text + f"<<<END {request.consumer_id}>>>"]
    return "\n".join(parts)


def _previous_section(request: RewriteRequest, previous: Attempt) -> list[str]:
    if previous.verdict is None:
        return [f"Attempt {previous.number} gave no usable answer: {previous.error}",
                "Answer with the structured output described in your instructions."]
    lines = [f"Attempt {previous.number} was rejected by the verifier:", previous.verdict.feedback]
    if previous.answer is not None:
        diff = unified_diff(request.text, normalise_answer(request.text, previous.answer.text),
                            request.consumer_id)
        lines += ["Its diff against the original (start again from the original):",
                  diff.rstrip("\n") or "(no difference)"]
    return lines


def normalise_answer(original: str, text: str) -> str:
    """Undo two chat habits that are not edits: a Markdown fence around the whole file, and
    a dropped or added final newline. The raw answer stays in the attempt's record.

    >>> normalise_answer("SELECT 1\\n", "```sql\\nSELECT 2\\n```")
    'SELECT 2\\n'
    >>> normalise_answer("SELECT 1", "SELECT 2\\n"), normalise_answer("x\\n", "")
    ('SELECT 2', '')
    """
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and len(stripped) > 6 \
            and not original.lstrip().startswith("```"):
        body = stripped[3:-3]
        text = body[body.find("\n") + 1:] if "\n" in body else body  # drop the ```sql line
    if not text:
        return text
    if original.endswith("\n") and not text.endswith("\n"):
        return text + "\n"
    if not original.endswith("\n") and text.endswith("\n"):
        return text[:-1]
    return text


def changes_from_diff(original: str, new: str, why: str) -> list[Change]:
    """One ``Change`` per changed block of lines; ``line`` is where it starts in the original.

    >>> [(c.line, c.before, c.after) for c in changes_from_diff("a\\nb\\nc\\n", "a\\nB\\nc\\nd\\n", "x")]
    [(2, 'b', 'B'), (4, '', 'd')]
    """
    old_lines, new_lines = original.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    return [Change(line=i1 + 1, before="\n".join(old_lines[i1:i2]), after="\n".join(new_lines[j1:j2]),
                   why=why)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def _usage(usage: Any) -> dict[str, int]:
    return {k: v for k in ("input_tokens", "output_tokens", "requests")
            if isinstance(v := getattr(usage, k, None), int)}


def _since(clock: float) -> float:
    return round(time.perf_counter() - clock, 6)


def _describe(exc: Exception) -> str:
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
