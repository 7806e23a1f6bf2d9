"""`skein plan` and `skein rewrite` on the demo fleet: real git repos, real warehouse."""

from __future__ import annotations

import json

import pytest

from skein.cli import main
from skein.demo.fleet import build_demo_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan-fleet")
    return out, build_demo_fleet(out, consumers=40, seed=7)


def test_plan_writes_patches_and_escalations(fleet, tmp_path, capsys):
    _, campaign = fleet
    code = main(["plan", str(campaign), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 3  # something is escalated (dropped column users): a human must look
    plan = json.loads((tmp_path / "plan.json").read_text())
    discovery = json.loads((tmp_path / "discovery.json").read_text())
    assert [i["id"] for i in plan["items"]] == [c["id"] for c in discovery["consumers"]]
    by_status = {}
    for item in plan["items"]:
        by_status.setdefault(item["status"], []).append(item)
    assert plan["counts"] == {s: len(by_status.get(s, [])) for s in ("patched", "escalate", "unchanged")}
    assert plan["counts"]["patched"] >= 15
    # Every consumer discovery escalated stays escalated; transitive ones are unchanged.
    for c in discovery["consumers"]:
        item = next(i for i in plan["items"] if i["id"] == c["id"])
        if c["status"] == "escalate":
            assert item["status"] == "escalate" and item["reason"]
        if c["status"] == "verify":
            assert item["status"] == "unchanged"
    for item in by_status["patched"]:
        diff = (tmp_path / item["patch_file"]).read_text()
        assert diff.startswith(f"--- a/{item['id']}\n+++ b/{item['id']}\n")
        assert "analytics_v2" in diff.lower()
        patched = (tmp_path / "patched" / item["id"].replace("/", "__")).read_text()
        assert "analytics.plays" not in patched.lower().replace("analytics.plays_", "")
    assert "escalate" in out


def test_rewrite_cli_prints_text_or_diff(fleet, capsys):
    root, campaign = fleet
    file = next(p for p in sorted((root / "repos" / "growth-analytics").rglob("*.sql"))
                if "analytics.plays" in p.read_text() and "legacy_flag" not in p.read_text()
                and "USING" not in p.read_text().upper())
    assert main(["rewrite", str(campaign), str(file)]) == 0
    text = capsys.readouterr().out
    assert "analytics_v2.plays" in text and text != file.read_text()
    assert main(["rewrite", str(campaign), str(file), "--diff"]) == 0
    diff = capsys.readouterr().out
    assert diff.startswith("--- a/") and "+" in diff


def test_rewrite_cli_escalation_exit_code(fleet, tmp_path, capsys):
    _, campaign = fleet
    file = tmp_path / "flag.sql"
    file.write_text("SELECT play_id FROM analytics.plays WHERE legacy_flag\n")
    assert main(["rewrite", str(campaign), str(file)]) == 3
    err = capsys.readouterr().err
    assert "escalated: line 1: uses legacy_flag, which the campaign drops" in err
    assert main(["rewrite", str(campaign), str(tmp_path / "missing.sql")]) == 2
