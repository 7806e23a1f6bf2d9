"""A folder of campaign files, as the DAG factory, the portal and ``skein validate`` read it.

A campaign id names one campaign: its DAG, its approvers, its store rows. Two files with one id
would make whichever file is read first the campaign (a new file could take an existing
campaign over, approvers included), so every file of a repeated id is refused, naming the
others, and none of them is used until the ids differ.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> for name in ("b.yaml", "a.yml", ".hidden.yaml", "notes.txt"):
...     _ = (d / name).write_text("campaign: x\\n")
>>> [p.name for p in campaign_files(d)]
['a.yml', 'b.yaml']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from skein.errors import SkeinError, SpecError

if TYPE_CHECKING:
    from skein.spec import Campaign


def campaign_files(directory: Path) -> list[Path]:
    """Campaign files directly in ``directory`` (``*.yaml``, ``*.yml``, not hidden), sorted."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file())


@dataclass
class CampaignFiles:
    """Each file's campaign, or why it cannot be used (``file:line: field: message``)."""

    campaigns: dict[Path, Campaign] = field(default_factory=dict)
    errors: dict[Path, str] = field(default_factory=dict)

    def by_id(self) -> dict[str, Campaign]:
        return {c.campaign: c for c in self.campaigns.values()}


def load_campaign_files(paths: list[Path]) -> CampaignFiles:
    """Load every file; one that does not load, or whose id another file also has, is an
    error, never a campaign. Any exception is caught per file (not only ``SkeinError``), so
    one bad file, or an engine bug it triggers, never hides the other campaigns."""
    from skein.spec import load_campaign

    result = CampaignFiles()
    seen = set()
    for path in paths:
        if path.resolve() in seen:  # one file named twice (a folder and a file in it)
            continue
        seen.add(path.resolve())
        try:
            result.campaigns[path] = load_campaign(path)
        except Exception as exc:  # noqa: BLE001 - reported, per file
            result.errors[path] = str(exc) if isinstance(exc, SkeinError) else \
                f"{path}: {type(exc).__name__}: {exc}"
    for path, problem in duplicate_ids(result.campaigns).items():
        del result.campaigns[path]
        result.errors[path] = str(problem)
    return result


def duplicate_ids(campaigns: dict[Path, Campaign]) -> dict[Path, SpecError]:
    """Every file whose campaign id another file also has, with an error naming the others."""
    files: dict[str, list[Path]] = {}
    for path, campaign in campaigns.items():
        files.setdefault(campaign.campaign, []).append(path)
    problems = {}
    for campaign_id, paths in files.items():
        for path in paths if len(paths) > 1 else []:
            others = ", ".join(str(campaigns[p].path or p) for p in paths if p != path)
            problems[path] = campaigns[path].error(
                f"id {campaign_id!r} is also the id of {others}: a campaign id names one "
                "campaign, so none of these files is used until each has its own id", "campaign")
    return problems
