"""Which consumers a campaign impacts, and what to do with each (docs/discovery.md).

``discover`` = check the campaign against the warehouse, build the catalog, then
``assess_impact``: a pure function of the catalog and the campaign that walks the
dataset graph downstream of the source in topological order.
"""

from __future__ import annotations

import difflib
import heapq
from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, ConfigDict

from skein.catalog import Catalog, Consumer, build_catalog
from skein.errors import SpecError, SpecErrors, WarehouseError
from skein.spec import Campaign
from skein.warehouse import Warehouse, open_warehouse

DiscoveryStatus = Literal["rewrite", "escalate", "verify"]
STATUSES: tuple[DiscoveryStatus, ...] = ("rewrite", "escalate", "verify")


class Reference(BaseModel):
    model_config = ConfigDict(frozen=True)
    dataset: str
    lines: list[int]


class ImpactedConsumer(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    kind: str
    repo: str | None
    path: str | None
    dialect: str
    owner: str
    tier: int | None
    lifecycle: str | None
    impact: str  # direct | transitive
    level: int
    order: int
    status: DiscoveryStatus
    reason: str | None
    columns: list[str]
    references: list[Reference]
    produces: str | None
    upstream: list[str]  # ids of impacted consumers producing what this one reads


class DiscoveryReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    campaign: str
    source: str
    target: str
    scanned: int
    consumers: list[ImpactedConsumer]
    counts: dict[str, int]
    derived_datasets: dict[str, int]  # dataset built on the source -> level
    unparseable: list[str]  # consumers that do not parse and are not listed above
    problems: list[str]


def discover(campaign: Campaign, workers: int | None = None) -> DiscoveryReport:
    """What ``skein discover`` prints (see ``discover_catalog``)."""
    return discover_catalog(campaign, workers)[1]


def discover_catalog(campaign: Campaign, workers: int | None = None
                     ) -> tuple[Catalog, DiscoveryReport]:
    """Check the campaign against the warehouse, build the catalog, assess the impact."""
    warehouse = connect(campaign)
    check_against_catalog(campaign, warehouse.schemas())
    catalog = build_catalog(campaign, warehouse, workers)
    return catalog, assess_impact(campaign, catalog)


def connect(campaign: Campaign) -> Warehouse:
    try:
        return open_warehouse(campaign.warehouse, campaign.base_dir)
    except WarehouseError as exc:
        raise campaign.error(str(exc), "warehouse") from None


def check_against_catalog(campaign: Campaign, schemas: dict[str, dict[str, str]]) -> None:
    """The source exists, mapped columns exist, expressions use target columns."""
    problems: list[SpecError] = []
    source = campaign.source.lower()
    if source not in schemas:
        hint = difflib.get_close_matches(source, schemas, n=1)
        problems.append(campaign.error(
            f"unknown dataset {campaign.source!r} in {campaign.warehouse}"
            + (f"; did you mean {hint[0]!r}?" if hint else ""), "source"))
        raise SpecErrors(problems)
    source_columns = schemas[source]
    for old in campaign.columns:
        if old.lower() not in source_columns:
            problems.append(campaign.error(
                f"unknown column {old!r} in source {source} (columns: {', '.join(source_columns)})",
                "columns", old))
    target_columns = _target_columns(campaign, schemas, problems)
    if target_columns is not None:
        problems.extend(_expression_problems(campaign, target_columns))
    problems.extend(sample_key_problems(campaign, schemas))
    if problems:
        raise SpecErrors(problems)


def _target_columns(campaign: Campaign, schemas, problems) -> set[str] | None:
    target = campaign.target.lower()
    if target in schemas:
        return set(schemas[target])
    if not campaign.forward:
        problems.append(campaign.error(
            f"dataset {campaign.target!r} does not exist in {campaign.warehouse} and no "
            "`forward` query builds it", "target"))
        return None
    from skein.lineage import analyze_sql

    built = analyze_sql(campaign.forward, campaign.sql_dialect, schemas)
    if built.error:
        problems.append(campaign.error(built.error, "forward"))
        return None
    return set(built.outputs)


def sample_key_problems(campaign: Campaign, schemas: dict[str, dict[str, str]]):
    """``simulation.sample_keys`` names datasets of the warehouse and their columns: the sample
    query would fail on another name (the target may be built by ``forward`` instead)."""
    for dataset, keys in campaign.simulation.sample_keys.items():
        columns = schemas.get(dataset.lower())
        if columns is None:
            if dataset.lower() != campaign.target.lower() or not campaign.forward:
                yield campaign.error(f"unknown dataset {dataset!r} in {campaign.warehouse}",
                                     "simulation", "sample_keys", dataset)
            continue
        unknown = [k for k in keys if k.lower() not in columns]
        if unknown:
            yield campaign.error(f"{', '.join(map(repr, unknown))}: not a column of {dataset} "
                                 f"(columns: {', '.join(columns)})", "simulation", "sample_keys", dataset)


def _expression_problems(campaign: Campaign, target_columns: set[str]):
    import sqlglot
    from sqlglot import exp

    for old, expression in campaign.columns.items():
        if expression is None:
            continue
        used = {c.name.lower() for c in sqlglot.parse_one(expression, read=campaign.sql_dialect)
                .find_all(exp.Column)}
        unknown = sorted(used - target_columns)
        if unknown:
            yield campaign.error(
                f"expression {expression!r} uses {', '.join(map(repr, unknown))}, not a column of "
                f"target {campaign.target} (columns: {', '.join(sorted(target_columns))})",
                "columns", old)


def assess_impact(campaign: Campaign, catalog: Catalog) -> DiscoveryReport:
    source = campaign.source.lower()
    dropped = {c.lower() for c, e in campaign.columns.items() if e is None}
    source_columns = list(catalog.schemas.get(source, {}))
    # dataset -> {column: source columns its value comes from}; None = unknown (unanalysed)
    lineage_to_source: dict[str, dict[str, set[str]] | None] = {
        source: {c: {c} for c in source_columns}}
    levels = {source: 0}
    producers: dict[str, Consumer] = {}

    impacted = _reachable(catalog, source)
    results: dict[str, dict] = {}
    for consumer in _topological(impacted, catalog, source):
        read = _datasets_read(consumer, lineage_to_source)
        upstream_levels = [levels[d] for d in read if d in levels]
        if not upstream_levels:
            continue  # reached only through a dataset whose producer turned out unaffected
        direct = source in read
        level = 1 if direct else min(upstream_levels) + 1
        columns, via_dropped = _columns_touched(consumer, read, lineage_to_source, dropped,
                                                source)
        status, reason = _status(consumer, direct, columns, via_dropped, dropped, read, producers)
        results[consumer.id] = dict(consumer=consumer, direct=direct, level=level, columns=columns,
                                    status=status, reason=reason, read=read)
        output = consumer.output
        if output and output != source and output not in levels:
            levels[output] = level
            producers[output] = consumer
            lineage_to_source[output] = _output_lineage(consumer, lineage_to_source)
    items = _ordered_items(results, producers, source)
    counts = {s: sum(1 for i in items if i.status == s) for s in STATUSES}
    listed = {i.id for i in items}
    return DiscoveryReport(
        campaign=campaign.campaign, source=source, target=campaign.target.lower(),
        scanned=len(catalog.consumers), consumers=items, counts=counts,
        derived_datasets={d: lv for d, lv in sorted(levels.items()) if d != source},
        unparseable=sorted(c.id for c in catalog.consumers if c.id not in listed
                           and _unparseable(c)),
        problems=list(catalog.problems))


def _unparseable(consumer: Consumer) -> bool:
    error = consumer.error or consumer.lineage.error or ""
    # Over the parse budget: never parsed, so found (like unparseable ones) by what it names.
    return bool(consumer.error) or error.startswith(("does not parse", "no SQL statement",
                                                     "too complex"))


def _mentions(consumer: Consumer, dataset: str) -> bool:
    return dataset in consumer.mentions


def _reads(consumer: Consumer) -> set[str]:
    return set(consumer.lineage.reads)


def _reachable(catalog: Catalog, source: str) -> list[Consumer]:
    """Consumers downstream of ``source``; unparseable ones by what their text mentions."""
    by_dataset: dict[str, list[Consumer]] = defaultdict(list)
    blind: list[Consumer] = []
    for consumer in catalog.consumers:
        if _unparseable(consumer):
            blind.append(consumer)
        for dataset in _reads(consumer):
            by_dataset[dataset].append(consumer)
    seen: set[str] = set()
    found: dict[str, Consumer] = {}
    frontier = [source]
    while frontier:
        dataset = frontier.pop()
        if dataset in seen:
            continue
        seen.add(dataset)
        reached = by_dataset.get(dataset, []) + [c for c in blind if _mentions(c, dataset)]
        for consumer in reached:
            if consumer.id not in found:
                found[consumer.id] = consumer
                if consumer.output and consumer.output not in seen:
                    frontier.append(consumer.output)
    return list(found.values())


def _topological(consumers: list[Consumer], catalog: Catalog, source: str) -> list[Consumer]:
    """Producers before their consumers; ties by id; cycles broken by id."""
    produced = {c.output: c.id for c in consumers if c.output}
    deps = {c.id: {produced[d] for d in _datasets_read(c, produced) if produced[d] != c.id}
            for c in consumers}
    by_id = {c.id: c for c in consumers}
    dependents = defaultdict(set)
    for cid, ds in deps.items():
        for d in ds:
            dependents[d].add(cid)
    remaining = {cid: len(ds) for cid, ds in deps.items()}
    heap = [cid for cid, n in remaining.items() if n == 0]
    heapq.heapify(heap)
    out: list[Consumer] = []
    while len(out) < len(consumers):
        if not heap:  # a cycle: release the smallest id still waiting
            heap = [min(cid for cid, n in remaining.items() if n > 0)]
            remaining[heap[0]] = 0
        cid = heapq.heappop(heap)
        if remaining.get(cid, 0) < 0:
            continue
        remaining[cid] = -1
        out.append(by_id[cid])
        for nxt in sorted(dependents[cid]):
            if remaining[nxt] > 0:
                remaining[nxt] -= 1
                if remaining[nxt] == 0:
                    heapq.heappush(heap, nxt)
    return out


def _datasets_read(consumer: Consumer, known: dict) -> set[str]:
    """Impacted datasets this consumer reads (by lineage, or by mention when unparseable)."""
    if _unparseable(consumer):
        return set(consumer.mentions.intersection(known))
    return {d for d in _reads(consumer) if d in known}


def _columns_touched(consumer: Consumer, read: set[str], lineage_to_source: dict,
                     dropped: set[str], source: str) -> tuple[list[str], list[str]]:
    columns: set[str] = set()
    via_dropped: list[str] = []
    for dataset in sorted(read):
        mapping = lineage_to_source.get(dataset)
        for column in sorted(consumer.lineage.reads.get(dataset, ())):
            origin = mapping.get(column, set()) if mapping else set()
            columns |= origin
            if dataset != source and origin & dropped:
                via_dropped.append(f"{dataset}.{column}")
    return sorted(columns), via_dropped


def _status(consumer: Consumer, direct: bool, columns: list[str], via_dropped: list[str],
            dropped: set[str], read: set[str], producers: dict[str, Consumer]):
    error = consumer.error or consumer.lineage.error
    if error:
        return "escalate", f"cannot analyse: {error}"
    used = sorted(set(columns) & dropped)
    if used and via_dropped:
        return "escalate", (f"reads {', '.join(via_dropped)}, derived from dropped column(s) "
                            f"{', '.join(used)}")
    if used:
        return "escalate", f"uses dropped column(s) {', '.join(used)}"
    opaque = sorted(producers[d].id for d in read if d in producers and
                    (producers[d].error or producers[d].lineage.error))
    if opaque and not direct:
        return "verify", f"upstream {', '.join(opaque)} could not be analysed"
    return ("rewrite" if direct else "verify"), None


def _output_lineage(consumer: Consumer, lineage_to_source: dict) -> dict[str, set[str]] | None:
    if consumer.error or consumer.lineage.error:
        return None
    out: dict[str, set[str]] = {}
    for column, leaves in consumer.lineage.output_lineage.items():
        origin: set[str] = set()
        for dataset, leaf in leaves:
            mapping = lineage_to_source.get(dataset)
            if mapping:
                origin |= mapping.get(leaf, set())
        out[column] = origin
    return out


def _ordered_items(results: dict[str, dict], producers: dict[str, Consumer],
                   source: str) -> list[ImpactedConsumer]:
    """Topological order (producers first), ties by (level, id): the order of waves."""
    producer_ids = {d: c.id for d, c in producers.items()}
    rank = {cid: i for i, cid in enumerate(results)}  # results arrive in topological order
    # Only edges pointing backwards in that order count, so a cycle cannot stall the sort.
    upstream = {cid: sorted({producer_ids[d] for d in r["read"] if d in producer_ids
                             and rank.get(producer_ids[d], len(rank)) < rank[cid]})
                for cid, r in results.items()}
    waiting = {cid: len(ups) for cid, ups in upstream.items()}
    dependents = defaultdict(list)
    for cid, ups in upstream.items():
        for up in ups:
            dependents[up].append(cid)
    heap = [(results[c]["level"], c) for c, n in waiting.items() if n == 0]
    heapq.heapify(heap)
    items = []
    while heap:
        _, cid = heapq.heappop(heap)
        items.append(_item(results[cid], len(items) + 1, upstream[cid]))
        for nxt in dependents[cid]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(heap, (results[nxt]["level"], nxt))
    return items


def _item(r: dict, order: int, upstream: list[str]) -> ImpactedConsumer:
    c: Consumer = r["consumer"]
    refs = [Reference(dataset=d, lines=sorted({c.file_line(n) for n in c.lineage.lines_for(d)}))
            for d in sorted(r["read"])]
    ownership = c.ownership
    return ImpactedConsumer(
        id=c.id, kind=c.kind, repo=c.repo, path=c.path, dialect=c.dialect,
        owner=ownership.owner, tier=ownership.tier, lifecycle=ownership.lifecycle,
        impact="direct" if r["direct"] else "transitive", level=r["level"], order=order,
        status=r["status"], reason=r["reason"], columns=r["columns"], references=refs,
        produces=c.output, upstream=upstream)


def render_text(report: DiscoveryReport) -> str:
    """A human-readable listing for the terminal."""
    lines = [f"campaign {report.campaign}: {report.source} -> {report.target}",
             f"scanned {report.scanned} consumers; impacted {len(report.consumers)}: "
             + ", ".join(f"{n} {s}" for s, n in report.counts.items())]
    for c in report.consumers:
        refs = "; ".join(f"{r.dataset}:{','.join(map(str, r.lines)) or '-'}" for r in c.references)
        cols = ",".join(c.columns) or "-"
        tier = c.tier if c.tier is not None else "-"
        lines.append(f"{c.order:>4}  {c.status:<8} {c.impact:<10} L{c.level} {c.kind:<9} {c.id}"
                     f"  owner={c.owner} tier={tier} columns={cols} refs={refs}")
        if c.reason:
            lines.append(f"      reason: {c.reason}")
    if report.unparseable:
        lines.append(f"unparseable, not mentioning the source: {', '.join(report.unparseable)}")
    for problem in report.problems:
        lines.append(f"warning: {problem}")
    return "\n".join(lines)
