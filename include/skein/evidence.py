"""Evidence an approver can judge in a minute: per consumer and for the whole campaign.

One JSON record per consumer (discovery facts, the patch and its diff, the agent's
rationale, the dry run's parity and expectations, timings, engine versions) rendered
as Markdown and HTML; a campaign summary counts by status and by owner.

>>> from skein.evidence import summary_counts
>>> summary_counts([{"status": "patched", "owner": "a", "wave": "canary"},
...                 {"status": "failed", "owner": "a"}])["by_owner"]
{'a': {'failed': 1, 'patched': 1}}
"""

from __future__ import annotations

import json
from html import escape
from urllib.parse import quote
import platform
from collections import Counter, defaultdict

from markdown_it import MarkdownIt

import skein
from skein.rundir import file_name

MARKDOWN_SPECIAL = "\\`*_{}[]()<>#+-.!|~&"


def engine_versions() -> dict[str, str]:
    import duckdb
    import sqlglot

    return {"skein": skein.__version__, "sqlglot": sqlglot.__version__, "duckdb": duckdb.__version__,
            "python": platform.python_version()}


def consumer_record(item, impacted, patch, simulation, wave: str | None = None) -> dict:
    """Everything known about one consumer, as plain JSON."""
    record = {"id": item.id, "status": item.status, "reason": item.reason, "order": item.order,
              "wave": wave,
              "impact": item.impact, "owner": impacted.owner, "tier": impacted.tier,
              "kind": impacted.kind, "dialect": impacted.dialect, "columns": impacted.columns,
              "references": [r.model_dump() for r in impacted.references],
              "produces": impacted.produces, "versions": engine_versions()}
    if patch is not None and hasattr(patch, "text"):
        record["patch"] = {"agent": patch.agent, "diff": patch.diff,
                           "changes": [c.model_dump() for c in patch.changes]}
    if simulation is not None:
        record["simulation"] = simulation.model_dump(mode="json")
    return record


def consumer_markdown(record: dict) -> str:
    lines = [f"# {record['id']}", "",
             f"**{record['status']}** — {record['impact']} consumer, owner `{record['owner']}`, "
             f"tier {record['tier'] if record['tier'] is not None else '-'}, {record['kind']} "
             f"({record['dialect']})", ""]
    if record.get("reason"):
        lines += [f"> {record['reason']}", ""]
    lines += [f"Columns touched: {', '.join(record['columns']) or 'none'}"]
    for ref in record["references"]:
        lines.append(f"- reads `{ref['dataset']}` at line(s) {', '.join(map(str, ref['lines'])) or '-'}")
    patch = record.get("patch")
    if patch:
        lines += ["", f"## Patch ({patch['agent']} agent)", ""]
        lines += [f"- line {c['line']}: `{c['before']}` → `{c['after']}` — {c['why']}"
                  for c in patch["changes"]]
        lines += ["", "```diff", patch["diff"].rstrip("\n"), "```"]
    simulation = record.get("simulation")
    if simulation:
        lines += ["", "## Dry run", "", f"**{simulation['status']}**: {simulation['reason']}"]
        if simulation.get("old_rows") is not None:
            lines.append(f"- rows: {simulation['old_rows']} before, {simulation['new_rows']} after; "
                         f"{simulation.get('only_old', 0)} only before, {simulation.get('only_new', 0)} only after")
        if simulation.get("differing_columns"):
            lines.append(f"- differing columns: {', '.join(simulation['differing_columns'])}")
        samples = simulation.get("samples") or []
        if samples:
            header = list(samples[0])
            lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(row.get(h)) for h in header) + " |" for row in samples]
        for check in simulation.get("expectations") or []:
            mark = "pass" if check.get("success") else "FAIL"
            lines.append(f"- expectation {check.get('type')} {json.dumps(check.get('kwargs', {}))}: {mark}")
        if simulation.get("dbt_build"):
            lines += dbt_build_lines(simulation["dbt_build"])
    lines += ["", f"_engines: {', '.join(f'{k} {v}' for k, v in record['versions'].items())}_"]
    return "\n".join(lines) + "\n"


def summary_counts(records: list[dict], wave_order: list[str] | None = None) -> dict:
    """Consumers by status, by owner and by wave (waves in ``wave_order``, canary first)."""
    by_owner: dict[str, Counter] = defaultdict(Counter)
    by_wave: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        by_owner[record["owner"]][record["status"]] += 1
        if record.get("wave"):
            by_wave[record["wave"]][record["status"]] += 1
    rank = {w: n for n, w in enumerate(wave_order or [])}
    return {"by_status": dict(sorted(Counter(r["status"] for r in records).items())),
            "by_owner": {o: dict(sorted(c.items())) for o, c in sorted(by_owner.items())},
            "by_wave": {w: dict(sorted(c.items()))
                        for w, c in sorted(by_wave.items(), key=lambda kv: rank.get(kv[0], len(rank)))}}


def summary_markdown(campaign: str, records: list[dict], wave_order: list[str] | None = None,
                     notes: list[str] | None = None) -> str:
    """The campaign summary; waves listed in ``wave_order`` (the rollout's), canary first;
    ``notes``: paragraphs under the title (see ``plan_notes``)."""
    counts = summary_counts(records, wave_order)
    lines = [f"# Campaign {campaign}", ""]
    for note in notes or []:
        lines += [note, ""]
    lines += ["| status | consumers |", "|---|---|"]
    lines += [f"| {s} | {n} |" for s, n in counts["by_status"].items()]
    statuses = sorted(counts["by_status"])
    lines += ["", "| owner | " + " | ".join(statuses) + " |", "|---|" + "---|" * len(statuses)]
    lines += [f"| {owner} | " + " | ".join(str(c.get(s, 0)) for s in statuses) + " |"
              for owner, c in counts["by_owner"].items()]
    if counts["by_wave"]:
        lines += ["", "| wave | " + " | ".join(statuses) + " |", "|---|" + "---|" * len(statuses)]
        lines += [f"| {wave} | " + " | ".join(str(c.get(s, 0)) for s in statuses) + " |"
                  for wave, c in counts["by_wave"].items()]
    lines += ["", "| # | consumer | status | wave | owner | why |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['order']} | [{_link_text(r['id'])}](evidence/{quote(file_name(r['id']))}.md) | {r['status']} | "
              f"{r.get('wave') or '-'} | {r['owner']} | {(r.get('reason') or '').replace('|', '/')} |"
              for r in records]
    return "\n".join(lines) + "\n"


def dbt_build_lines(build: dict) -> list[str]:
    r"""The dbt verdict in the evidence: what was built, which tests ran, dbt's messages as
    literal text (dbt quotes the project's own SQL and data in them).

    >>> lines = dbt_build_lines({"status": "refuted", "reason": "model m error: *x* [y](z)",
    ...                          "nodes": [{"name": "m", "type": "model", "status": "error",
    ...                                     "message": "<b>", "failures": None}]})
    >>> print(lines[3]); print(lines[-1])
    **refuted**: model m error: \*x\* \[y\]\(z\)
    - model m: error — \<b\>
    """
    lines = ["", "## dbt build", "", f"**{build['status']}**: {markdown_literal(build['reason'])}", ""]
    if build.get("built") is not None:
        lines.append(f"- built: {markdown_literal(', '.join(build['built']) or 'nothing')}; "
                     f"tests passed: {build.get('tests_passed', 0)}; "
                     f"{build.get('seconds', 0):.1f} s")
    for node in build.get("nodes") or []:
        failures = f" ({node['failures']} failing rows)" if node.get("failures") else ""
        lines.append(f"- {node['type']} {markdown_literal(node['name'])}: {node['status']}{failures}"
                     + (f" — {markdown_literal(node['message'])}" if node.get("message") else ""))
    return lines


def markdown_literal(text: str) -> str:
    r"""``text`` shown as itself in Markdown: every character CommonMark gives a meaning
    (emphasis, links, code, HTML, entities, list and heading marks) backslash-escaped, newlines
    folded.

    >>> print(markdown_literal("a_b <i>\n`c`"))
    a\_b \<i\> \`c\`
    """
    flat = " ".join(text.split())
    return "".join("\\" + ch if ch in MARKDOWN_SPECIAL else ch for ch in flat)


def _link_text(text: str) -> str:
    r"""``text`` inside a Markdown table cell's link: its brackets and bars escaped.

    >>> _link_text("r/[ab]|c.sql")
    'r/\\[ab\\]\\|c.sql'
    """
    return "".join("\\" + ch if ch in "[]|\\`*" else ch for ch in text)


def markdown_html(markdown: str) -> str:
    """Markdown (CommonMark and tables) as an HTML fragment.

    >>> markdown_html("**5** patched")
    '<p><strong>5</strong> patched</p>\\n'
    """
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)


def html_page(title: str, markdown: str) -> str:
    """A standalone HTML page of ``markdown`` (evidence and summary files)."""
    body = markdown_html(markdown)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}"
            "pre{background:#f6f6f6;padding:.5em;overflow:auto}</style></head><body>"
            f"{body}</body></html>\n")


def status_sentence(plan, waves: dict[str, list[str]]) -> str:
    """The plan's counts in one sentence, unchanged consumers split by whether they are verified.

    >>> from skein.plan import _example_report, plan_items
    >>> from skein.rewrite.request import Escalation
    >>> plan = plan_items(_example_report(), {"r/a.sql": Escalation(consumer_id="r/a.sql",
    ...                                                             agent="rule", reason="x")})
    >>> status_sentence(plan, {"everyone": []})
    '**0 pending** (patched, waiting for their wave), 0 verified (unchanged, checked against the migrated upstream), 1 blocked (unchanged, an upstream is not migrated), **1 escalated**, **0 failed** (the dry run refuted the patch).'
    """
    from skein.statuses import counts_sentence

    verified, left = plan.unchanged_split(waves)
    return counts_sentence(plan.counts.get("patched", 0), verified, left,
                           plan.counts.get("escalated", 0), plan.counts.get("failed", 0))


def plan_notes(plan, waves: dict[str, list[str]]) -> list[str]:
    """Why the numbers a user meets on the way differ: discovery's "rewrite" count against the
    plan's patched count, and the waves' count against patched plus verified."""
    notes = []
    changed = plan.not_patched_after_all()
    if changed:
        rewrite = sum(1 for i in plan.items if i.discovery_status == "rewrite")
        notes.append(f"Discovery sent {rewrite} consumers to the rewriter; {len(changed)} did not "
                     "end patched: " + "; ".join(f"`{i.id}` {i.status} ({i.reason})" for i in changed[:5])
                     + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "") + ".")
    unverified = plan.not_dry_run()
    if unverified:
        notes.append(f"{len(unverified)} patch(es) not dry-run, so in no wave (escalated: "
                     "a person decides): " + ", ".join(f"`{i.id}`" for i in unverified[:10])
                     + (f" and {len(unverified) - 10} more" if len(unverified) > 10 else "") + ".")
    verified, left = plan.unchanged_split(waves)
    total = sum(len(ids) for ids in waves.values())
    notes.append(f"The waves hold {total} consumers: the {plan.counts.get('patched', 0)} patched and "
                 f"the {verified} unchanged ones verified against their migrated upstream"
                 + (f"; {left} unchanged consumers wait for an upstream that is not migrated "
                    "(escalated), so they are in no wave" if left else "") + ".")
    return notes


def approval_markdown(campaign, run_id: str, plan, summary, waves: dict[str, list[str]],
                      link: str, params: dict | None = None, *, consumer_url=None,
                      record: str | None = None) -> str:
    """What an approver reads: counts, waves, failures, escalations, the per-owner table, and
    the trigger's params that change what happens (an approver must see a raised threshold)."""
    from skein.rollout import wave_threshold

    c = plan.counts
    lines = [f"## {campaign.title}",
             f"`{campaign.source}` -> `{campaign.target}`, run `{run_id}`.", "",
             status_sentence(plan, waves), "", *plan_notes(plan, waves), "",
             "| wave | consumers | soak | threshold |", "|---|---|---|---|"]
    params = params or {}
    for wave in campaign.rollout.waves:
        threshold = wave_threshold(campaign, wave.name, params.get("error_threshold"))
        lines.append(f"| {wave.name} | {len(waves.get(wave.name, []))} | {wave.soak_minutes:g} min | "
                     f"{threshold:.0%} |")
    all_waves = [w.name for w in campaign.rollout.waves]
    chosen = [f"{name} = `{params[name]}`" for name in ("waves", "error_threshold", "consumers")
              if params.get(name) is not None and not (name == "waves" and params[name] == all_waves)]
    if chosen:
        lines += ["", "**This run was triggered with** " + ", ".join(chosen) + "."]
    problems = plan.with_status("escalated", "failed")
    if problems:
        lines += ["", "Not applied (a human decides):", ""]
        lines += [f"- {_consumer_ref(i.id, consumer_url)}: {i.status}: {i.reason}"
                  for i in problems[:20]]
        if len(problems) > 20:
            lines.append(f"- ... and {len(problems) - 20} more")
    lines += ["", "| owner | consumers by status |", "|---|---|"]
    for owner, counts in summary.by_owner.items():
        lines.append(f"| {owner} | " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + " |")
    lines += ["", f"Evidence: [{link}]({link})"
              + (f" (kept for the record as `{record}`)" if record else "")]
    return "\n".join(lines) + "\n"


def _consumer_ref(cid: str, consumer_url) -> str:
    """A consumer in an approval: its id, linked to its page when there is one.

    >>> _consumer_ref("r/q.sql", None), _consumer_ref("r/q.sql", lambda c: "https://p/" + c)
    ('`r/q.sql`', '[`r/q.sql`](https://p/r/q.sql)')
    """
    return f"[`{cid}`]({consumer_url(cid)})" if consumer_url else f"`{cid}`"
