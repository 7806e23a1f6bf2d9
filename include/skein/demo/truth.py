"""The ground truth: docs/discovery.md's impact rules applied to hand-declared templates.

Only the consumers' declarations are used (what each touches, what it produces and the
value lineage of its output): the SQL text is never parsed, so discovery, which reads
the SQL, is checked against something it cannot share a bug with.

>>> from skein.demo.model import ConsumerSpec, Produced, lineage, touch
>>> def spec(id, reads, produces=None):
...     return ConsumerSpec(id, 0, "f", "v", "sql", "r", id, "", "duckdb", "unowned", None,
...                         reads, produces, True, False, None, None, None, None)
>>> view = Produced("s.v", "x", lineage("analytics.plays", a="user_id", n=None))
>>> truth = ground_truth([spec("r/v.sql", touch("analytics.plays", "user_id"), view),
...                       spec("r/q.sql", touch("s.v", "a", "n"))])
>>> truth["consumers"]["r/q.sql"]["level"], truth["consumers"]["r/q.sql"]["columns"]
(2, ['user_id'])
"""

from __future__ import annotations

from skein.demo.model import CAMPAIGN, DROPPED, SOURCE, ConsumerSpec


def _levels(specs: list[ConsumerSpec]) -> dict[str, int]:
    """Impact level per consumer id: 1 reads the source, n+1 reads a level-n product.

    Specs come in plan order, where every producer precedes its readers, so one pass
    suffices.
    """
    producer_of = {s.produces.name: s.id for s in specs if s.produces}
    levels: dict[str, int] = {}
    for s in specs:
        if not s.parses:
            if s.mentions_source:
                levels[s.id] = 1
            continue
        if SOURCE in s.reads:
            # The fleet never mixes the source and a derived dataset in one consumer,
            # where the doc leaves the level and the columns open.
            assert not any(producer_of.get(d) in levels for d in s.reads if d != SOURCE), s.id
            levels[s.id] = 1
            continue
        upstream = [levels[producer_of[d]] for d in s.reads if producer_of.get(d) in levels]
        if upstream:
            # One upstream level per consumer, so "level n+1" is unambiguous.
            assert len(set(upstream)) == 1, s.id
            levels[s.id] = upstream[0] + 1
    return levels


def _to_source(specs: list[ConsumerSpec], levels: dict[str, int]):
    """A function mapping (dataset, column) to the source columns its value comes from."""
    produced = {s.produces.name: s for s in specs if s.produces}
    memo: dict[tuple[str, str], frozenset[str]] = {}

    def resolve(dataset: str, column: str) -> frozenset[str]:
        """Source columns behind ``dataset.column`` (empty when not derived)."""
        key = (dataset, column)
        if key not in memo:
            if dataset == SOURCE:
                memo[key] = frozenset({column})
            elif dataset in produced and produced[dataset].id in levels:
                lin = produced[dataset].produces.lineage[column]
                memo[key] = frozenset().union(*(resolve(d, c) for d, c in lin))
            else:  # an unrelated table, or a dataset built without the source
                memo[key] = frozenset()
        return memo[key]

    return resolve


def _status(spec: ConsumerSpec, level: int, columns: list[str]) -> str:
    """escalate / rewrite / verify, as docs/discovery.md "Status" states."""
    if not spec.parses or DROPPED & set(columns):
        return "escalate"
    return "rewrite" if level == 1 else "verify"


def ground_truth(specs: list[ConsumerSpec]) -> dict:
    """The ``ground_truth.json`` document for a planned fleet."""
    levels = _levels(specs)
    resolve = _to_source(specs, levels)
    consumers = {}
    for s in specs:
        if s.id not in levels:
            continue
        level = levels[s.id]
        if level == 1:
            columns = set(s.reads.get(SOURCE, ()))
        else:
            columns = set().union(*(resolve(d, c) for d, cols in s.reads.items() for c in cols))
        columns = sorted(columns)
        consumers[s.id] = {
            "kind": s.kind,
            "impact": "direct" if level == 1 else "transitive",
            "level": level,
            "status": _status(s, level, columns),
            "columns": columns,
            "produces": s.produces.name if s.produces and s.parses else None,
            "owner": s.owner,
            "tier": s.tier,
            "dialect": s.dialect,
        }
    return {
        "campaign": CAMPAIGN,
        "source": SOURCE,
        "consumers": dict(sorted(consumers.items())),
        "unaffected": sorted(s.id for s in specs if s.id not in levels),
        "unparseable": sorted(s.id for s in specs if not s.parses),
    }
