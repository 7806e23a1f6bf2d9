"""Who owns a consumer, how critical it is, and which SQL dialect it is written in.

Backstage's ``catalog-info.yaml`` is what teams already keep in their repos; the
nearest one above a file wins, so a sub-folder can belong to another team.

>>> import tempfile, pathlib
>>> repo = pathlib.Path(tempfile.mkdtemp())
>>> _ = (repo / "catalog-info.yaml").write_text('''
... apiVersion: backstage.io/v1alpha1
... kind: Component
... metadata: {name: growth, annotations: {skein/tier: "2", skein/dialect: snowflake,
...                                         skein/region: eu}}
... spec: {owner: team-growth, lifecycle: production}
... ''')
>>> (repo / "sub").mkdir()
>>> _ = (repo / "sub" / "q.sql").write_text("select 1")
>>> o = OwnershipResolver(repo).for_file(repo / "sub" / "q.sql")
>>> o.owner, o.tier, o.lifecycle, o.dialect, o.region
('team-growth', 2, 'production', 'snowflake', 'eu')
>>> parse_view_comment("owner=team-x tier=1 region=us")
Ownership(owner='team-x', tier=1, lifecycle=None, dialect=None, region='us')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

UNOWNED = "unowned"
CATALOG_FILE = "catalog-info.yaml"


@dataclass(frozen=True)
class Ownership:
    owner: str = UNOWNED
    tier: int | None = None
    lifecycle: str | None = None
    dialect: str | None = None
    region: str | None = None  # picks the Celery queue that applies the consumer (fleet.queues)


class OwnershipResolver:
    """Resolves ownership for files of one repository, caching each folder's answer."""

    def __init__(self, repo_root: Path):
        self.root = repo_root.resolve()
        self._cache: dict[Path, Ownership] = {}
        self.problems: list[str] = []  # unreadable catalog files: reported, never fatal
        self._fallback = Ownership(owner=_codeowners_default(self.root) or UNOWNED)

    def for_file(self, path: Path) -> Ownership:
        return self._for_dir(path.resolve().parent)

    def _for_dir(self, folder: Path) -> Ownership:
        if folder in self._cache:
            return self._cache[folder]
        found = self._read(folder / CATALOG_FILE)
        if found is None:
            if folder == self.root or self.root not in folder.parents:
                found = self._fallback
            else:
                found = self._for_dir(folder.parent)
        self._cache[folder] = found
        return found

    def _read(self, path: Path) -> Ownership | None:
        if not path.is_file():
            return None
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(d, dict)]
        except (OSError, yaml.YAMLError) as exc:
            self.problems.append(f"{path}: cannot read: {exc}")
            return None
        doc = next((d for d in docs if d.get("kind") == "Component"), docs[0] if docs else None)
        if doc is None:
            return None
        spec = doc.get("spec") or {}
        annotations = (doc.get("metadata") or {}).get("annotations") or {}
        return Ownership(owner=str(spec.get("owner") or self._fallback.owner),
                         tier=_tier(annotations.get("skein/tier"), path, self.problems),
                         lifecycle=spec.get("lifecycle"),
                         dialect=annotations.get("skein/dialect"),
                         region=annotations.get("skein/region"))


def _tier(value, path: Path, problems: list[str]) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        problems.append(f"{path}: annotation skein/tier {value!r} is not an integer")
        return None


def _codeowners_default(root: Path) -> str | None:
    """The owner of ``*`` in CODEOWNERS (GitHub's three usual places)."""
    for candidate in (root / "CODEOWNERS", root / ".github" / "CODEOWNERS", root / "docs" / "CODEOWNERS"):
        if not candidate.is_file():
            continue
        owner = None
        for line in candidate.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 2 and parts[0] == "*":
                owner = parts[1].lstrip("@")  # last matching rule wins in CODEOWNERS
        if owner:
            return owner
    return None


_COMMENT_FIELD = re.compile(r"\b(owner|tier|lifecycle|dialect|region)\s*=\s*([\w./@-]+)")


def parse_view_comment(comment: str | None) -> Ownership:
    """Ownership written in a warehouse view's comment as ``owner=<team> tier=<n>`` (also
    ``lifecycle=``, ``dialect=``, ``region=``)."""
    fields = dict(_COMMENT_FIELD.findall(comment or ""))
    tier = fields.get("tier")
    return Ownership(owner=fields.get("owner", UNOWNED),
                     tier=int(tier) if tier and tier.isdigit() else None,
                     lifecycle=fields.get("lifecycle"), dialect=fields.get("dialect"),
                     region=fields.get("region"))
