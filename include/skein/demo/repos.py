"""The consumer repositories: files on disk, then real git history with fixed identities.

Author, committer and dates are pinned through git's environment and the user's git
configuration is ignored, so the same fleet gives the same commit hashes anywhere.

>>> print(catalog_info("growth-analytics", Owner("team-growth", 2, None), "production"))
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: growth-analytics
  annotations:
    skein/tier: "2"
spec:
  type: data-pipeline
  lifecycle: production
  owner: team-growth
<BLANKLINE>
"""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from pathlib import Path

from skein.demo import dbt_project
from skein.demo.model import DBT_REPO, REPOS, ConsumerSpec, Owner

COMMITS = (("2024-05-02T09:30:00+00:00", "Scaffold the repository"),
           ("2024-06-03T14:15:00+00:00", "Add SQL"))


def catalog_info(name: str, owner: Owner, lifecycle: str) -> str:
    """A Backstage catalog-info.yaml for a component."""
    notes = [f'    skein/tier: "{owner.tier}"'] if owner.tier is not None else []
    if owner.dialect:
        notes.append(f"    skein/dialect: {owner.dialect}")
    annotations = "  annotations:\n" + "\n".join(notes) + "\n" if notes else ""
    return (f"apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n"
            f"{annotations}spec:\n  type: data-pipeline\n  lifecycle: {lifecycle}\n"
            f"  owner: {owner.owner}\n")


def scaffold_files(repo: str) -> dict[str, str]:
    """Every file of ``repo`` that is not a consumer: metadata, README, dbt project files."""
    meta = REPOS[repo]
    files = {"README.md": f"# {repo}\n\nSQL owned by "
                          f"{meta.owner_of('README.md').owner}. Part of the Skein demo fleet.\n"}
    for folder, owner in meta.catalog_info.items():
        name = repo if not folder else f"{repo}-{folder.replace('/', '-')}"
        files[f"{folder}/catalog-info.yaml".lstrip("/")] = catalog_info(name, owner,
                                                                        meta.lifecycle)
    if meta.codeowners:
        files["CODEOWNERS"] = f"# Everything here belongs to one team\n* @{meta.codeowners}\n"
    if repo == DBT_REPO:
        files.update(dbt_project.project_files())
    if repo == "sandbox":
        files[".gitignore"] = "*.local.sql\n"
    return files


def untracked_files(repo: str) -> dict[str, str]:
    """Ignored files that mention the source: not consumers, since git does not track them."""
    mention = "select play_id, user_id from analytics.plays\n"
    if repo == DBT_REPO:
        return {"target/compiled/music/models/staging/stg_plays.sql": mention}
    if repo == "sandbox":
        return {"scratch/try.local.sql": mention}
    return {}


def _write(root: Path, files: dict[str, str]) -> None:
    """Write text files under ``root`` with LF line endings."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)


def _git_env(repo: str, date: str) -> dict[str, str]:
    """Environment pinning identity and dates, and shutting out the user's git config."""
    owner = REPOS[repo].owner_of("README.md").owner
    who, email = f"{owner} bot", f"{owner}@acme.example"
    return {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": who, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": who, "GIT_COMMITTER_EMAIL": email,
            "GIT_COMMITTER_DATE": date, "LC_ALL": "C"}


def _git(root: Path, env: dict[str, str], *args: str) -> None:
    """Run git in ``root`` with pinned settings, quietly."""
    subprocess.run(["git", "-C", str(root), "-c", "commit.gpgsign=false",
                    "-c", "core.autocrlf=false", *args],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def write_repos(root: Path, specs: list[ConsumerSpec]) -> list[Path]:
    """Create every repository under ``root``: scaffold commit, then the consumers."""
    by_repo: dict[str, dict[str, str]] = defaultdict(dict)
    for spec in specs:
        if spec.repo:
            by_repo[spec.repo][spec.path] = spec.text
    made = []
    for repo in REPOS:
        path = root / repo
        path.mkdir(parents=True)
        (date1, msg1), (date2, msg2) = COMMITS
        _git(path, _git_env(repo, date1), "init", "-q", "-b", "main")
        _write(path, untracked_files(repo))
        _write(path, scaffold_files(repo))
        _git(path, _git_env(repo, date1), "add", "-A")
        _git(path, _git_env(repo, date1), "commit", "-q", "-m", msg1)
        if by_repo[repo]:
            _write(path, by_repo[repo])
            _git(path, _git_env(repo, date2), "add", "-A")
            _git(path, _git_env(repo, date2), "commit", "-q", "-m", msg2)
        made.append(path)
    return made
