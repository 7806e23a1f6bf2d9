"""A patch's diff is what git would show: one line per line, even when the file (or a view's
definition) has no final newline (issue 20, defect 1: the change read as one glued line)."""

from __future__ import annotations

import subprocess

from conftest import make_git_repo
from skein.rewrite.request import Patch

OLD = "CREATE VIEW v AS\nselect 1 from analytics.plays"
NEW = "CREATE VIEW v AS\nselect 1 from analytics_v2.plays"


def patch(original: str, text: str) -> Patch:
    return Patch(consumer_id="v.sql", agent="rule", original=original, text=text, changes=[])


def test_a_last_line_without_newline_stays_its_own_line():
    lines = patch(OLD, NEW).diff.splitlines()
    assert "-select 1 from analytics.plays" in lines
    assert "+select 1 from analytics_v2.plays" in lines
    assert not any("plays+" in line or "plays-" in line for line in lines)


def test_git_applies_the_diff_and_gets_the_patched_bytes(tmp_path):
    for old, new in [(OLD, NEW), (OLD + "\n", NEW), (OLD, NEW + "\n"), (OLD + "\n", NEW + "\n")]:
        repo = make_git_repo(tmp_path / str(abs(hash((old, new)))), {"v.sql": old})
        (repo / "p.diff").write_text(patch(old, new).diff)
        subprocess.run(["git", "-C", str(repo), "apply", "p.diff"], check=True, capture_output=True)
        assert (repo / "v.sql").read_text() == new
