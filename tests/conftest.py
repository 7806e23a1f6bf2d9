"""Shared test helpers: small real git repositories and DuckDB warehouses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "Skein Test", "GIT_AUTHOR_EMAIL": "test@skein.invalid",
           "GIT_COMMITTER_NAME": "Skein Test", "GIT_COMMITTER_EMAIL": "test@skein.invalid"}


def make_git_repo(root: Path, files: dict[str, str]) -> Path:
    """A real git repository holding ``files``, all committed."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", "init"], check=True, env=env)
    return root
