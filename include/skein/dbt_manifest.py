"""A dbt project's graph as frozen plain data, read from dbt's ``target/manifest.json``.

Only the root project's resources are kept (a stand-in or installed package's macros are
not consumers). Names of datasets follow the rest of Skein: ``schema.alias``, lowercase.

>>> manifest = {"metadata": {"project_name": "shop"}, "nodes": {"model.shop.a": {
...     "resource_type": "model", "package_name": "shop", "name": "a", "unique_id": "model.shop.a",
...     "original_file_path": "models/a.sql", "database": "sandbox", "schema": "main",
...     "alias": "a", "depends_on": {"nodes": ["seed.shop.s"], "macros": []},
...     "refs": [{"name": "s"}], "sources": [], "raw_code": "select * from {{ ref('s') }}",
...     "compiled_code": "select * from sandbox.main.s", "columns": {"id": {"name": "id"}},
...     "config": {"materialized": "view", "contract": {"enforced": False}}}},
...     "sources": {}, "semantic_models": {}, "metrics": {}}
>>> node = nodes_of(manifest)[0]
>>> node.dataset, node.depends_on, node.compiled_code, [c.name for c in node.columns]
('main.a', ('seed.shop.s',), 'select * from sandbox.main.s', ['id'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

NODE_TYPES = ("model", "seed", "snapshot", "test", "analysis")


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str | None = None


@dataclass(frozen=True)
class Node:
    unique_id: str
    resource_type: str
    name: str
    path: str  # relative to the project
    database: str
    schema: str
    alias: str
    version: str | None = None
    depends_on: tuple[str, ...] = ()  # unique ids of nodes and sources
    refs: tuple[str, ...] = ()  # ref() names as written
    sources: tuple[tuple[str, str], ...] = ()  # source() calls as written
    macros: tuple[str, ...] = ()
    raw_code: str = ""
    compiled_code: str | None = None
    compile_error: str | None = None
    columns: tuple[Column, ...] = ()  # declared in YAML
    materialized: str | None = None
    contract_enforced: bool = False
    incremental_strategy: str | None = None
    unique_key: tuple[str, ...] = ()
    config: tuple[tuple[str, str], ...] = ()  # other config, as text: column_types, delimiter

    @property
    def dataset(self) -> str:
        return f"{self.schema}.{self.alias}".lower()


@dataclass(frozen=True)
class SourceTable:
    unique_id: str
    source_name: str
    name: str
    identifier: str
    database: str
    schema: str
    path: str
    columns: tuple[Column, ...] = ()

    @property
    def dataset(self) -> str:
        return f"{self.schema}.{self.identifier}".lower()


@dataclass(frozen=True)
class SemanticModel:
    name: str
    model: str  # the node it reads (unique id)
    path: str
    # (kind, name, expr): entities, dimensions and measures; expr None means the column `name`.
    elements: tuple[tuple[str, str, str | None], ...] = ()

    def columns_used(self) -> tuple[str, ...]:
        """Plain column names this semantic model reads (an ``expr`` that is an identifier,
        or the element's own name); expressions are kept in ``elements``."""
        names = [expr if expr else name for _, name, expr in self.elements]
        return tuple(sorted({n for n in names if n.isidentifier()}))


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    path: str
    measures: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    expressions: tuple[str, ...] = ()  # expr and filter templates, verbatim


@dataclass(frozen=True)
class Manifest:
    project: str
    nodes: tuple[Node, ...] = ()
    sources: tuple[SourceTable, ...] = ()
    semantic_models: tuple[SemanticModel, ...] = ()
    metrics: tuple[Metric, ...] = ()
    by_id: dict = field(default_factory=dict, compare=False, repr=False)

    def node(self, unique_id: str) -> Node | SourceTable:
        return self.by_id[unique_id]

    def of_type(self, resource_type: str) -> list[Node]:
        return [n for n in self.nodes if n.resource_type == resource_type]


def read_manifest(manifest: dict, compile_errors: dict[str, str] | None = None) -> Manifest:
    """The frozen graph of a parsed manifest; ``compile_errors`` by unique id from run_results."""
    nodes = nodes_of(manifest, compile_errors or {})
    sources = sources_of(manifest)
    by_id = {n.unique_id: n for n in nodes} | {s.unique_id: s for s in sources}
    return Manifest(project=manifest["metadata"]["project_name"], nodes=tuple(nodes),
                    sources=tuple(sources), semantic_models=tuple(semantic_models_of(manifest)),
                    metrics=tuple(metrics_of(manifest)), by_id=by_id)


def _columns(entry: dict) -> tuple[Column, ...]:
    return tuple(Column(c.get("name") or k, c.get("data_type"))
                 for k, c in (entry.get("columns") or {}).items())


def _root_entries(manifest: dict, key: str) -> list[dict]:
    project = manifest["metadata"]["project_name"]
    return [e for e in (manifest.get(key) or {}).values() if e.get("package_name", project) == project]


def nodes_of(manifest: dict, compile_errors: dict[str, str] | None = None) -> list[Node]:
    out = []
    for n in _root_entries(manifest, "nodes"):
        if n["resource_type"] not in NODE_TYPES:
            continue
        config = n.get("config") or {}
        key = config.get("unique_key")
        extra = {k: str(config[k]) for k in ("column_types", "delimiter") if config.get(k)}
        out.append(Node(
            unique_id=n["unique_id"], resource_type=n["resource_type"], name=n["name"],
            path=n["original_file_path"], database=n.get("database") or "",
            schema=n.get("schema") or "", alias=n.get("alias") or n["name"],
            version=None if n.get("version") is None else str(n["version"]),
            depends_on=tuple((n.get("depends_on") or {}).get("nodes") or ()),
            refs=tuple(r["name"] if isinstance(r, dict) else r[-1] for r in n.get("refs") or ()),
            sources=tuple(tuple(s) for s in n.get("sources") or ()),
            macros=tuple((n.get("depends_on") or {}).get("macros") or ()),
            raw_code=n.get("raw_code") or "", compiled_code=n.get("compiled_code"),
            compile_error=(compile_errors or {}).get(n["unique_id"]),
            columns=_columns(n), materialized=config.get("materialized"),
            contract_enforced=bool((config.get("contract") or {}).get("enforced")),
            incremental_strategy=config.get("incremental_strategy"),
            unique_key=tuple([key] if isinstance(key, str) else key or ()),
            config=tuple(sorted(extra.items()))))
    return out


def sources_of(manifest: dict) -> list[SourceTable]:
    return [SourceTable(unique_id=s["unique_id"], source_name=s["source_name"], name=s["name"],
                        identifier=s.get("identifier") or s["name"], database=s.get("database") or "",
                        schema=s.get("schema") or s["source_name"], path=s["original_file_path"],
                        columns=_columns(s))
            for s in _root_entries(manifest, "sources")]


def semantic_models_of(manifest: dict) -> list[SemanticModel]:
    out = []
    for s in _root_entries(manifest, "semantic_models"):
        elements = [(kind[:-1], e["name"], e.get("expr"))
                    for kind in ("entities", "dimensions", "measures") for e in s.get(kind) or ()]
        parents = (s.get("depends_on") or {}).get("nodes") or [""]
        out.append(SemanticModel(s["name"], parents[0], s["original_file_path"], tuple(elements)))
    return out


def metrics_of(manifest: dict) -> list[Metric]:
    out = []
    for m in _root_entries(manifest, "metrics"):
        params = m.get("type_params") or {}
        measures = [i["name"] for i in params.get("input_measures") or ()]
        metrics = [i["name"] for i in params.get("metrics") or ()]
        metrics += [params[k]["name"] for k in ("numerator", "denominator") if params.get(k)]
        texts = [params["expr"]] if params.get("expr") else []
        texts += [w["where_sql_template"] for w in ((m.get("filter") or {}).get("where_filters") or ())]
        out.append(Metric(m["name"], m["type"], m["original_file_path"], tuple(measures),
                          tuple(metrics), tuple(texts)))
    return out
