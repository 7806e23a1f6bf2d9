"""Build the demo fleet: a warehouse, consumer repositories, a campaign and its ground truth.

``plan_fleet`` is pure: it places ``consumers`` template instances, cycling through the
families in a fixed order (producers first, so readers always find an upstream), with
parameters drawn from a per-consumer random stream seeded by ``seed``. ``build_demo_fleet``
writes the plan out.

>>> specs = plan_fleet(consumers=len(FAMILIES), seed=7)
>>> sorted({s.family for s in specs}) == sorted(f.name for f in FAMILIES)
True
>>> specs[0].id
'music-dbt/models/staging/stg_plays_0000.sql'
"""

from __future__ import annotations

import json
import random
import shutil
from collections import defaultdict
from pathlib import Path

from skein.demo import dbt_project
from skein.demo.manifest import user_changes, write_manifest
from skein.demo.model import (CAMPAIGN, DBT_REPO, DEFAULT_DIALECT, REPOS, SOURCE, TARGET,
                              WAREHOUSE, ConsumerSpec, Draft, Family, Slot)
from skein.demo.repos import write_repos
from skein.demo.templates_dialects import DIALECT_FAMILIES
from skein.demo.templates_direct import DIRECT_FAMILIES
from skein.demo.templates_producers import PRODUCER_FAMILIES
from skein.demo.templates_readers import FIXED_ROTATION, READER_FAMILIES, UNAFFECTED_FAMILIES
from skein.demo.truth import ground_truth
from skein.demo.warehouse_data import FORWARD_SQL, build_warehouse
from skein.errors import SkeinError

# Producers first: in every round of families, readers find an upstream made before.
FAMILIES: tuple[Family, ...] = (PRODUCER_FAMILIES + DIRECT_FAMILIES + DIALECT_FAMILIES
                                + READER_FAMILIES + UNAFFECTED_FAMILIES)
OUTPUTS = ("warehouse.duckdb", "warehouse.duckdb.wal", "repos", "campaigns", "ground_truth.json")


def _location(family: Family, position: int, occurrence: int) -> str:
    """Rotate a family over its locations; offset by its position so that the first
    round of families already spreads over every repository."""
    offset = 0 if family.name in FIXED_ROTATION else position
    return family.locations[(occurrence + offset) % len(family.locations)]


def _place(draft: Draft, family: Family, slot: Slot, refs: dict[str, str]) -> ConsumerSpec:
    """Turn a template's draft into a consumer with id, path, owner and dialect."""
    produces = draft.produces
    if slot.location == WAREHOUSE:
        cid, repo, path = f"warehouse/{produces.name}", None, None
        owner, dialect = draft.view_owner, DEFAULT_DIALECT
    else:
        repo = slot.location
        folder = REPOS[repo].leaf_folder if draft.folder is None else draft.folder
        path = f"{folder}/{draft.filename}" if folder else draft.filename
        cid = f"{repo}/{path}"
        owner = REPOS[repo].owner_of(path)
        dialect = owner.dialect or DEFAULT_DIALECT
    rendered = None
    if draft.parses and dialect == "duckdb":
        rendered = draft.text
        if repo == DBT_REPO:
            this = produces.name if produces else f"analytics.{Path(path).stem}"
            rendered = dbt_project.render(draft.text, this, refs)
    return ConsumerSpec(
        id=cid, index=slot.index, family=family.name, variant=draft.variant, kind=draft.kind,
        repo=repo, path=path, text=draft.text, dialect=dialect, owner=owner.owner,
        tier=owner.tier, reads=draft.reads, produces=produces, parses=draft.parses,
        mentions_source=draft.mentions_source, comment=draft.comment, rendered=rendered,
        deploy=draft.deploy, dbt_model=draft.dbt_model)


def plan_fleet(consumers: int = 40, seed: int = 7) -> list[ConsumerSpec]:
    """The fleet's consumers, in an order where producers precede their readers."""
    pools: dict[str, list[ConsumerSpec]] = defaultdict(list)
    refs: dict[str, str] = {}  # dbt model name -> relation, for ref()
    specs = []
    for index in range(consumers):
        position, occurrence = index % len(FAMILIES), index // len(FAMILIES)
        family = FAMILIES[position]
        # A stream per consumer: changing one template does not reshuffle the others.
        rng = random.Random(f"skein-demo/{seed}/{index}")
        slot = Slot(index, occurrence, rng, _location(family, position, occurrence), pools)
        spec = _place(family.build(slot), family, slot, refs)
        specs.append(spec)
        if spec.produces:
            pools[spec.produces.shape].append(spec)
        if spec.dbt_model:
            refs[spec.dbt_model] = spec.produces.name
    return specs


def campaign_yaml() -> str:
    """The demo campaign, plays-v2."""
    forward = "".join(f"  {line}\n" if line else "\n" for line in FORWARD_SQL.splitlines())
    return f"""\
campaign: {CAMPAIGN}
title: Move plays to analytics_v2, rename user_id, seconds instead of ms
description: |
  `analytics.plays` moves to **`analytics_v2.plays`**, built from the old table by the
  forward SQL below. For reviewers, what changes in a consumer:

  - `user_id` is now `account_id`;
  - `ms_played` (BIGINT milliseconds) becomes `duration_s` (DECIMAL seconds);
  - `country` becomes `country_code`, an ENUM of the country codes;
  - `legacy_flag` is dropped: consumers that read it are escalated to their owners.
owners: [data-platform]
warehouse: duckdb:///../warehouse.duckdb     # relative to this file
source: {SOURCE}
target: {TARGET}
columns:
  user_id: account_id
  ms_played: CAST(duration_s * 1000 AS BIGINT)
  country: CAST(country_code AS VARCHAR)
  legacy_flag: null
forward: |
{forward}consumers:
  - repo: ../repos/*
    dialect: duckdb
  - warehouse_views: true
rollout:
  # A real campaign runs nightly ("0 2 * * *", the default); the demo waits for a trigger,
  # so `make run` never starts a run, nor asks for an approval, on its own.
  schedule: null
  approvers: [admin]
  error_threshold: 0.1
  waves:
    - name: canary
      share: 0.1
    - name: everyone
      share: 1.0
"""


def _prepare(out: Path, replace: bool) -> None:
    """Make ``out`` ready: refuse a non-empty folder that is not an earlier fleet, and an
    earlier fleet holding work the demo did not make (unless ``replace``); then remove the
    earlier fleet's outputs (and only those)."""
    if out.exists() and not out.is_dir():
        raise SkeinError(f"{out}: is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not (out / "ground_truth.json").exists():
            raise SkeinError(f"{out}: not empty and not a demo fleet; choose another --out")
        lost = [] if replace else user_changes(out, OUTPUTS)
        if lost:
            shown = "\n  ".join(lost[:10]) + (f"\n  ... and {len(lost) - 10} more" if len(lost) > 10 else "")
            raise SkeinError(f"{out} holds work the demo did not make; rebuilding would delete "
                             f"it:\n  {shown}\nmove it away, choose another --out, or pass "
                             "--replace to delete it")
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


MAX_DEMO_CONSUMERS = 100_000  # bench/ builds 10,000


def build_demo_fleet(out: Path, consumers: int = 40, seed: int = 7, replace: bool = False) -> Path:
    """Build the demo fleet under ``out``; returns the campaign file's path. ``replace``:
    rebuild an earlier fleet even where it holds changes the demo did not make."""
    if not 1 <= consumers <= MAX_DEMO_CONSUMERS:  # past it: hours of git commits, gigabytes
        raise SkeinError(f"--consumers must be from 1 to {MAX_DEMO_CONSUMERS:,}, not {consumers}")
    out = Path(out)
    _prepare(out, replace)
    specs = plan_fleet(consumers, seed)
    build_warehouse(out / "warehouse.duckdb", seed, specs)
    write_repos(out / "repos", specs)
    campaign = out / "campaigns" / f"{CAMPAIGN}.yaml"
    campaign.parent.mkdir()
    campaign.write_text(campaign_yaml(), encoding="utf-8")
    truth = json.dumps(ground_truth(specs), indent=2, sort_keys=True) + "\n"
    (out / "ground_truth.json").write_text(truth, encoding="utf-8")
    write_manifest(out)
    return campaign
