"""The rule agent: deterministic, schema-aware rewrites with minimal diffs.

Resolve every reference to the source (``skein.rewrite.references``), let each rule
turn references into text edits, splice them into the original file, then run the
scope check the LLM agent's patches face too. Anything a rule cannot do is an
``Escalation`` with the reason, never a guess.

>>> from skein.rewrite.testing import example_request
>>> patch = rewrite(example_request(
...     "-- listeners\\nSELECT user_id,  COUNT(*) AS n\\nFROM analytics.plays  -- all\\nGROUP BY 1",
...     {"user_id": "account_id"}))
>>> print(patch.text)
-- listeners
SELECT account_id AS user_id,  COUNT(*) AS n
FROM analytics_v2.plays  -- all
GROUP BY 1
>>> rewrite(example_request("SELECT legacy_flag FROM analytics.plays", {"legacy_flag": None})).reason
'line 1: uses legacy_flag, which the campaign drops (no replacement expression)'

A file that does not read the source is ``Unchanged``, not an escalation: there is nothing
for a human to decide.

>>> result = rewrite(example_request("SELECT 1 FROM analytics.other", {}))
>>> result.kind, result.reason
('unchanged', 'does not read analytics.plays: nothing to rewrite')
"""

from __future__ import annotations

from sqlglot.errors import SqlglotError

from skein.rewrite.request import Change, Escalation, Patch, RewriteRequest, Unchanged
from skein.agents.scope_check import check_patch
from skein.dbt import DbtRenderError
from skein.lineage import SchemaCache
from skein.rewrite.edits import Edit, EditConflict, apply_edits, normalize
from skein.rewrite.dbt_mask import jinja_masker
from skein.rewrite.jinja import JinjaMask
from skein.rewrite.parsed import ParsedSQL, parse_sql
from skein.rewrite.references import UnsupportedReference, find_references
from skein.rewrite.resolve import Catalog
from skein.rewrite.rules import RULES
from skein.rewrite.rules.context import Escalate, RuleContext
from skein.sqlbudget import Deadline, TooComplex

AGENT = "rule"


class DoesNotRead(Exception):
    """The consumer has no reference to the source: it stays as it is."""


def rewrite(request: RewriteRequest) -> Patch | Escalation | Unchanged:
    """A patch that makes the consumer read the target, ``Unchanged`` when it does not read
    the source, or the reason it cannot be rewritten."""
    try:
        return _rewrite(request)
    except DoesNotRead as exc:
        return Unchanged(consumer_id=request.consumer_id, agent=AGENT, reason=str(exc))
    except (Escalate, UnsupportedReference, EditConflict, DbtRenderError, TooComplex) as exc:
        return Escalation(consumer_id=request.consumer_id, agent=AGENT, reason=str(exc))
    except RecursionError:  # sqlglot parses, copies and walks trees recursively
        return Escalation(consumer_id=request.consumer_id, agent=AGENT,
                          reason="nested too deeply for the rules to rewrite")


def _rewrite(request: RewriteRequest) -> Patch:
    deadline = Deadline()  # the parse budget bounds each step; this bounds them all
    _check_renders(request)
    parsed, edits = plan_edits(request)
    deadline.check("the rules' edits")
    new_text = apply_edits(request.text, edits)
    # The check reuses the parsed original and its resolution (and changes its trees).
    verdict = check_patch(request, new_text, original=parsed, edits=edits)
    if not verdict.ok:
        raise Escalate("the rule rewrite failed the scope check: " + "; ".join(verdict.problems))
    return Patch(consumer_id=request.consumer_id, agent=AGENT, original=request.text, text=new_text,
                 changes=[Change(line=e.line(request.text), before=request.text[e.start:e.end],
                                 after=e.text, why=e.why) for e in edits])


def _check_renders(request: RewriteRequest) -> None:
    """A dbt file whose Jinja does not render (or breaks the renderer's limits) is escalated:
    no patch of it can be checked or dry-run. Rendered in its project's sandboxed process."""
    if request.dbt_project_root and request.consumer_path:
        from pathlib import Path

        from skein.rewrite.dbt_mask import dbt_project

        dbt_project(request.dbt_project_root).render(Path(request.consumer_path), request.text)


def plan_edits(request: RewriteRequest) -> tuple[ParsedSQL, list[Edit]]:
    """The consumer parsed and resolved, and the rules' edits (not checked yet); raises
    ``Escalate``/``UnsupportedReference`` with the reason when rules cannot rewrite it, and
    ``DoesNotRead`` when the consumer has no reference to the source."""
    masker = jinja_masker(request)
    mask: JinjaMask | None = masker.mask(request.text) if masker else None
    sql = mask.text if mask else request.text
    try:
        parsed = parse_sql(sql, request.dialect)
    except TooComplex:
        raise
    except SqlglotError as exc:
        raise Escalate(f"does not parse as {request.dialect}: {str(exc).splitlines()[0]}") from None
    schemas, placeholders = request.schemas, {}
    for placeholder, relation in (mask.tables if mask else {}).items():
        placeholders[f"{request.default_schema}.{placeholder}"] = relation
        if relation in request.schemas:
            schemas = dict(schemas) if schemas is request.schemas else schemas
            schemas[f"{request.default_schema}.{placeholder}"] = request.schemas[relation]
    catalog = Catalog(SchemaCache.shared(schemas), request.default_schema)
    ctx = RuleContext(text=sql, request=request, jinja_tables=mask.tables if mask else {},
                      jinja_spans=mask.placeholder_spans if mask else {}, tokens=parsed.tokens)
    edits, reads_source = [], False
    for number, statement in enumerate(parsed.statements):
        refs = find_references(statement, request.source, request.dialect, catalog,
                               request.default_schema, placeholders, text=sql)
        if refs.resolution is not None:
            parsed.resolutions[number] = refs.resolution
        reads_source |= bool(refs.tables)
        for rule in RULES:
            edits.extend(rule(ctx, refs))
    if not reads_source:
        hidden = mask.opaque(request.text) if mask else []
        if hidden:  # it may read the source there: not proven unchanged
            line, expression = hidden[0]
            raise Escalate(f"line {line}: no reference to {request.source} outside Jinja, and "
                           f"`{expression}` renders to something the rules cannot read")
        raise DoesNotRead(f"does not read {request.source}: nothing to rewrite")
    edits = normalize(edits)
    for edit in edits:
        if mask and mask.inside_jinja(edit.start, edit.end):
            raise Escalate(f"line {edit.line(request.text)}: a reference to {request.source} is inside "
                           "a Jinja expression (macro call); the rules do not edit Jinja")
    return parsed, edits
