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
from typing import Any

from skein.errors import SpecError
from skein.yamlspan import CONSUMER_LIMITS, YamlDoc, load_yaml_documents, read_yaml_text, shorten

UNOWNED = "unowned"
MAX_NAME = 200  # an owner, lifecycle, dialect or region: a name, not a text
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
        """The file's ownership; a file that cannot be read (syntax, wrong types, limits) is
        a problem naming its line, and the folder falls back to the default owner."""
        if not path.is_file() or path.is_symlink():
            return None
        try:
            docs = load_yaml_documents(read_yaml_text(path, CONSUMER_LIMITS), str(path))
            doc = next((d for d in docs if isinstance(d.data, dict)
                        and d.data.get("kind") == "Component"),
                       next((d for d in docs if isinstance(d.data, dict)), None))
            if doc is None and any(d.data is not None for d in docs):
                raise SpecError("expected a mapping (a Backstage entity: kind, metadata, spec)",
                                file=str(path), line=1)
            return None if doc is None else self._ownership(doc)
        except SpecError as exc:
            self.problems.append(f"{exc}; owner unknown ({self._fallback.owner})")
            return self._fallback

    def _ownership(self, doc: YamlDoc) -> Ownership:
        annotations = _field(doc, ("metadata", "annotations"), dict) or {}
        return Ownership(owner=_field(doc, ("spec", "owner"), str) or self._fallback.owner,
                         tier=_tier(annotations.get("skein/tier"), doc, self.problems),
                         lifecycle=_field(doc, ("spec", "lifecycle"), str),
                         dialect=_field(doc, ("metadata", "annotations", "skein/dialect"), str),
                         region=_field(doc, ("metadata", "annotations", "skein/region"), str))


def _field(doc: YamlDoc, path: tuple[str, ...], kind: type) -> Any:
    """The value at ``path`` (None when absent); of another type, a ``SpecError`` naming its
    line and field (numbers where text is expected are read as text: ``owner: 42``)."""
    value: Any = doc.data
    for depth, key in enumerate(path):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _wrong_type(doc, path[:depth], value, "a mapping")
        value = value.get(key)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and len(value) > MAX_NAME:  # it is printed on every line about it
        raise SpecError(f"longer than {MAX_NAME} characters ({shorten(value)})", file=doc.file,
                        line=doc.line_of(path), field=".".join(path))
    if value is None or isinstance(value, kind):
        return value
    raise _wrong_type(doc, path, value, "text" if kind is str else "a mapping")


def _wrong_type(doc: YamlDoc, path: tuple[str, ...], value: Any, expected: str) -> SpecError:
    got = {dict: "a mapping", list: "a list", str: "text"}.get(type(value), type(value).__name__)
    return SpecError(f"expected {expected}, got {got} ({shorten(repr(value))})", file=doc.file,
                     line=doc.line_of(path), field=".".join(path))


def _tier(value, doc: YamlDoc, problems: list[str]) -> int | None:
    if value is None:
        return None
    try:
        if isinstance(value, (str, int)) and not isinstance(value, bool) and len(str(value)) < 10:
            return int(str(value).strip())
    except ValueError:
        pass
    problems.append(str(SpecError(f"annotation skein/tier {shorten(repr(value))} is not an "
                                  "integer", file=doc.file,
                                  line=doc.line_of(("metadata", "annotations", "skein/tier")))))
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
