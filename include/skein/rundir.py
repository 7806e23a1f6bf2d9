"""The run directory: the only module that knows file names, and writes them atomically.

Each file is written by the one step that produces it (``docs/architecture.md`` lists
which) and read back as the model it was written from, never as a raw dict. A write goes
to a temporary file first and is renamed into place, so a step killed half way leaves the
previous version or none, and a retried step writes the same bytes again.

``<skein home>/runs/<campaign>/<run id>/`` (``skein plan --out DIR`` uses DIR)::

    campaign.yaml            the spec as the run started (for the record)      start
    catalog.pkl, discovery.json                                              discover
    agents/<id>.json, llm/<id>.json (the LLM agent's transcript)              rewrite
    simulation/<id>.json, retry/<id>.json, llm/<id>.retry.json               simulate
    plan.json, agents.json, patches/, patched/, evidence/, summary.*,
    waves.json, apply_batches.json                                           summarize
    .skein-plan (``skein plan --out`` only: Skein may write this folder again)

>>> file_name("repo/models/x.sql")
'repo__models__x.sql'

File names are injective: ``growth/x/y.sql`` and repository ``growth__x``'s ``y.sql`` used
to share one file, and one consumer was applied with the other's patch (issue 18).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from pathlib import Path

from pydantic import BaseModel, TypeAdapter

from skein.catalog import Catalog
from skein.discovery import DiscoveryReport
from skein.errors import SkeinError
from skein.paths import consumer_id, file_name  # noqa: F401 - the run directory's names
from skein.plan import Plan, StatusCounts
from skein.rewrite.request import Escalation, Patch, Unchanged

_RESULT = TypeAdapter(Patch | Escalation | Unchanged)
PLAN_MARKER = ".skein-plan"  # in a `skein plan --out` folder: Skein may write there again
def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file of its own in the same folder: two
    processes writing one file (a rerun racing a run of the same id, parallel apply tasks)
    each rename a whole file of theirs, never one the other already moved."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


class Retry(BaseModel):
    """A patch the dry run refuted, sent back to the LLM agent: what it answered."""

    result: Patch | Escalation
    refuted_by: str  # the simulation's verdict the agent was given


class RunDirectory:
    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    # --- start ---------------------------------------------------------------------------
    def claim_for_plan(self) -> None:
        """Make ``skein plan --out DIR`` write only into a folder that is new, empty, or an
        earlier plan's: its files (``campaign.yaml``, ``patches/``...) would overwrite a
        user's own. A ``SkeinError`` naming a file found there otherwise."""
        entries = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        earlier = PLAN_MARKER in entries or {"campaign.yaml", "discovery.json", "plan.json"} <= set(entries)
        if entries and not earlier:
            shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise SkeinError(f"--out {self.path}: the folder holds files Skein did not write "
                             f"({shown}): give a new or empty folder, or an earlier plan's")
        write_atomic(self.path / PLAN_MARKER, b"written by skein plan: it may write here again\n")

    def freeze_campaign(self, spec_file: Path) -> None:
        """Keep a copy of the spec, once: a reopened run keeps the one it started with."""
        frozen = self.path / "campaign.yaml"
        if not frozen.is_file():
            write_atomic(frozen, Path(spec_file).read_bytes())

    # --- discover --------------------------------------------------------------------------
    def write_discovery(self, catalog: Catalog, report: DiscoveryReport) -> None:
        write_atomic(self.path / "catalog.pkl", pickle.dumps(catalog))
        write_atomic(self.path / "discovery.json", _json(report))

    def catalog(self) -> Catalog:
        with open(self.path / "catalog.pkl", "rb") as handle:
            # Written by this run's discover step, inside Skein's own home: trusted.
            return pickle.load(handle)  # noqa: S301

    def report(self) -> DiscoveryReport:
        return DiscoveryReport.model_validate_json(self._read("discovery.json"))

    # --- rewrite and simulate --------------------------------------------------------------
    def write_agent_result(self, consumer_id: str, result: Patch | Escalation) -> None:
        write_atomic(self._consumer_file("agents", consumer_id), _json(result))

    def write_transcript(self, consumer_id: str, transcript: BaseModel, retry: bool = False) -> None:
        """The LLM agent's prompts, answers and verdicts for one consumer."""
        suffix = ".retry.json" if retry else ".json"
        write_atomic(self.path / "llm" / (file_name(consumer_id) + suffix), _json(transcript))

    def write_retry(self, consumer_id: str, retry: Retry) -> None:
        write_atomic(self._consumer_file("retry", consumer_id), _json(retry))

    def write_simulation(self, consumer_id: str, simulation: BaseModel) -> None:
        write_atomic(self._consumer_file("simulation", consumer_id), _json(simulation))

    def results(self, ids: list[str]) -> dict[str, Patch | Escalation]:
        """Each consumer's final agent result: the retry's answer when the dry run refuted
        the first patch, else the rewrite step's."""
        first = self._per_consumer("agents", ids, _RESULT.validate_json)
        retried = self._per_consumer("retry", ids, Retry.model_validate_json)
        return {cid: retried[cid].result if cid in retried else result for cid, result in first.items()}

    def retries(self, ids: list[str]) -> dict[str, Retry]:
        return self._per_consumer("retry", ids, Retry.model_validate_json)

    def simulations(self, ids: list[str]) -> dict:
        from skein.simulation.simulate import SimulationResult

        return self._per_consumer("simulation", ids, SimulationResult.model_validate_json)

    # --- summarize -------------------------------------------------------------------------
    def write_plan(self, plan: Plan, results: dict[str, Patch | Escalation]) -> None:
        """plan.json, agents.json (every result in one file, for scripts), and per patch its
        diff and its new text."""
        for cid, result in results.items():
            if isinstance(result, Patch):
                write_atomic(self.path / "patches" / f"{file_name(cid)}.diff", result.diff.encode())
                write_atomic(self.path / "patched" / file_name(cid), result.text.encode())
        everything = {cid: json.loads(r.model_dump_json()) for cid, r in results.items()}
        write_atomic(self.path / "agents.json",
                     (json.dumps(everything, indent=2, sort_keys=True) + "\n").encode())
        write_atomic(self.path / "plan.json", _json(plan))

    def plan(self) -> Plan:
        return Plan.model_validate_json(self._read("plan.json"))

    def has_plan(self) -> bool:
        return (self.path / "plan.json").is_file()

    def write_evidence(self, consumer_id: str, record: dict, markdown: str, html: str) -> None:
        base = self.path / "evidence" / file_name(consumer_id)
        write_atomic(base.with_name(base.name + ".json"),
                     (json.dumps(record, indent=2, default=str) + "\n").encode())
        write_atomic(base.with_name(base.name + ".md"), markdown.encode())
        write_atomic(base.with_name(base.name + ".html"), html.encode())

    def evidence_file(self, consumer_id: str, suffix: str = ".md") -> Path:
        return self.path / "evidence" / (file_name(consumer_id) + suffix)

    def write_summary(self, counts: StatusCounts, markdown: str, html: str) -> None:
        write_atomic(self.path / "summary.json", _json(counts))
        write_atomic(self.path / "summary.md", markdown.encode())
        write_atomic(self.path / "summary.html", html.encode())

    def summary(self) -> StatusCounts:
        return StatusCounts.model_validate_json(self._read("summary.json"))

    @property
    def summary_html(self) -> Path:
        return self.path / "summary.html"

    def write_waves(self, waves: dict[str, list[str]]) -> None:
        write_atomic(self.path / "waves.json", json.dumps(waves, indent=2).encode())

    def waves(self) -> dict[str, list[str]]:
        """wave -> consumer ids to apply, in order."""
        return json.loads(self._read("waves.json"))

    def write_apply_batches(self, batches: dict[str, dict[str, list[list[str]]]]) -> None:
        write_atomic(self.path / "apply_batches.json", json.dumps(batches, indent=1).encode())

    def apply_batches(self) -> dict[str, dict[str, list[list[str]]]]:
        """wave -> apply group -> batches of consumer ids."""
        return json.loads(self._read("apply_batches.json"))

    # --- helpers ---------------------------------------------------------------------------
    def _consumer_file(self, folder: str, consumer_id: str) -> Path:
        return self.path / folder / f"{file_name(consumer_id)}.json"

    def _per_consumer(self, folder: str, ids: list[str], parse) -> dict:
        """``<folder>/<consumer>.json`` of every consumer of ``ids`` that has one."""
        out = {}
        for cid in ids:
            path = self._consumer_file(folder, cid)
            if path.is_file():
                out[cid] = parse(path.read_text(encoding="utf-8"))
        return out

    def _read(self, name: str) -> str:
        return (self.path / name).read_text(encoding="utf-8")


def _json(model: BaseModel) -> bytes:
    return (model.model_dump_json(indent=2) + "\n").encode()
