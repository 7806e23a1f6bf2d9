"""What a demo fleet folder held when it was built, so a rebuild never deletes someone's work.

``skein demo-fleet --out X`` over an earlier fleet replaces it; files a user added under
``X/campaigns/``, a campaign they edited, or commits and edits of their own in ``X/repos/``
would go with it. The manifest records the campaign files' hashes and each repository's
HEAD; ``user_changes`` lists what differs. Commits by Skein itself (a campaign run on the demo)
are the demo being used, not the user's work.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

MANIFEST = ".skein-demo.json"
SKEIN_AUTHOR = "Skein"  # skein.apply's commits and merges
HASHED = ("campaigns", "ground_truth.json")
KNOWN = {MANIFEST, ".skein-demo-params", "plan"}  # make run's own files next to the fleet


def write_manifest(out: Path) -> None:
    repos = {p.name: _git(p, "rev-parse", "HEAD").strip() for p in sorted((out / "repos").iterdir())}
    data = {"files": _hashes(out), "repos": repos}
    (out / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def user_changes(out: Path, outputs: tuple[str, ...]) -> list[str]:
    """What rebuilding ``out`` would destroy that the demo did not make, one line each.

    An earlier fleet without a manifest (older Skein) cannot be checked: it is reported whole.
    """
    manifest_file = out / MANIFEST
    if not manifest_file.exists():
        return [f"{out} was built by an older Skein: what changed since cannot be told"]
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    found = [f"{p.name}: not part of the demo" for p in sorted(out.iterdir())
             if p.name not in outputs and p.name not in KNOWN]
    built, now = manifest["files"], _hashes(out)
    found += [f"{rel}: added since the demo was built" for rel in sorted(set(now) - set(built))]
    found += [f"{rel}: changed since the demo was built" for rel in sorted(set(now) & set(built))
              if now[rel] != built[rel]]
    repos = out / "repos"
    for repo in sorted(repos.iterdir()) if repos.is_dir() else []:
        found += _repo_changes(repo, manifest["repos"].get(repo.name))
    return found


def _repo_changes(repo: Path, head: str | None) -> list[str]:
    where = f"repos/{repo.name}"
    if head is None or not (repo / ".git").exists():
        return [f"{where}: not part of the demo"]
    if _git(repo, "status", "--porcelain", "--untracked-files=all").strip():
        return [f"{where}: uncommitted changes"]
    authors = set(_git(repo, "log", "--format=%an", f"{head}..HEAD").split("\n")) - {"", SKEIN_AUTHOR}
    return [f"{where}: commits by {', '.join(sorted(authors))}"] if authors else []


def _hashes(out: Path) -> dict[str, str]:
    found = {}
    for name in HASHED:
        top = out / name
        for path in ([top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []):
            if path.is_file():
                found[str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else "?"
