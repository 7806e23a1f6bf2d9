"""Issue 18, items 5 and 6: the warehouse's views and consumers' SQL are other teams' code.

- Views used as inputs (the dry run's sampled worlds, the gate's samples, monitoring) are read
  on a locked-down DuckDB connection, with the sandbox's limits: a view over a file on disk
  never puts the file's content into a plan, the evidence, the summary or the store; the
  consumer reading it fails with the refusal as its reason.
- Every consumer's SQL is parsed within a budget (``skein.sqlbudget``): inputs of the issue's
  sizes are escalated "too complex" in bounded memory, and SIGINT stops a long discovery with
  exit 130 and no traceback.

Each test builds a small real world: a DuckDB warehouse, git repositories, a campaign file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import make_git_repo
from skein.cli import main as skein
from test_spec import GOOD

SECRET = "TOPSECRET-7c1f-never-in-evidence"
READER = "SELECT user_id, ms_played FROM analytics.plays\n"
# test_spec's campaign, its repositories only, under the sandbox's tighter limits
CAMPAIGN = GOOD.replace("  - warehouse_views: true\n", "") + \
    "simulation:\n  timeout_s: 20\n  memory_limit: 256MB\n"


def make_warehouse(root: Path) -> None:
    con = duckdb.connect(str(root / "wh.duckdb"))
    con.execute("CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2")
    con.execute("CREATE TABLE analytics.plays AS SELECT i AS user_id, i * 1000 AS ms_played, "
                "false AS legacy_flag FROM range(50) t(i)")
    con.execute("CREATE TABLE analytics_v2.plays AS SELECT i AS account_id, i AS duration_s "
                "FROM range(50) t(i)")
    con.close()


# --- item 5: views are read inside the sandbox ------------------------------------------------

def secret_views(root: Path) -> dict[str, str]:
    """View name -> its definition: each reaches the secret another way."""
    secrets = root / "secrets"
    secrets.mkdir()
    (secrets / "secret.txt").write_text(SECRET + "\n")
    (secrets / "secret.csv").write_text(f"k,v\n1,{SECRET}\n")
    other = duckdb.connect(str(secrets / "other.duckdb"))
    other.execute(f"CREATE TABLE t AS SELECT 1 AS k, '{SECRET}' AS v")
    other.close()
    return {
        "rpt.by_read_text": f"SELECT 1 AS k, content AS v FROM read_text('{secrets}/secret.txt')",
        "rpt.by_read_csv": f"SELECT k, v FROM read_csv('{secrets}/secret.csv')",
        "rpt.by_file_name": f"SELECT k, v FROM '{secrets}/secret.csv'",
        "rpt.by_glob": f"SELECT 1 AS k, file AS v FROM glob('{secrets}/*')",
        "rpt.by_macro": "SELECT k, v FROM rpt.leak()",
        "rpt.by_attached": "SELECT k, v FROM other.main.t",
    }


@pytest.fixture(scope="module")
def secret_world(tmp_path_factory):
    """A campaign whose consumers each join the source with a view over a secret, planned and
    run (``skein run --approve all``) with its own ``SKEIN_HOME``."""
    root = tmp_path_factory.mktemp("secret-views")
    make_warehouse(root)
    views = secret_views(root)
    con = duckdb.connect(str(root / "wh.duckdb"))
    con.execute("CREATE SCHEMA rpt")
    con.execute(f"CREATE MACRO rpt.leak() AS TABLE SELECT 1 AS k, content AS v "
                f"FROM read_text('{root}/secrets/secret.txt')")
    con.execute(f"ATTACH '{root}/secrets/other.duckdb' AS other (READ_ONLY)")
    for name, definition in views.items():
        con.execute(f"CREATE VIEW {name} AS {definition}")
    con.close()
    files = {"plain.sql": READER}
    for name in views:
        files[f"{name.split('.')[1]}.sql"] = (f"SELECT p.user_id, s.v FROM analytics.plays AS p "
                                              f"JOIN {name} AS s ON s.k = 1\n")
    make_git_repo(root / "repos" / "growth", files)
    campaign = root / "c.yaml"
    campaign.write_text(CAMPAIGN)
    env = {**os.environ, "SKEIN_HOME": str(root / "home"), "PYTHONWARNINGS": "ignore"}
    plan = subprocess.run([sys.executable, "-m", "skein.cli", "plan", str(campaign), "--out",
                           str(root / "plan"), "--workers", "1"],
                          capture_output=True, text=True, env=env, timeout=600)
    run = subprocess.run([sys.executable, "-m", "skein.cli", "run", str(campaign), "--approve",
                          "all", "--no-soak", "--json", "--workers", "1"],
                         capture_output=True, text=True, env=env, timeout=600)
    return {"root": root, "views": views, "plan": plan, "run": run}


def files_holding(folder: Path, needle: str) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and needle.encode() in p.read_bytes())


def test_a_view_over_a_secret_file_leaks_into_no_plan_evidence_summary_or_store(secret_world):
    root, plan, run = secret_world["root"], secret_world["plan"], secret_world["run"]
    assert "Traceback" not in plan.stderr + run.stderr, plan.stderr[-3000:] + run.stderr[-3000:]
    assert SECRET not in plan.stdout + plan.stderr + run.stdout + run.stderr
    assert files_holding(root / "plan", SECRET) == []  # plan.json, summary.{md,html,json}, evidence/
    assert files_holding(root / "home", SECRET) == []  # the run directory and the store (store.db)
    assert any((root / "home" / "runs").rglob("summary.html"))  # the run got that far


def test_each_consumer_of_a_secret_view_fails_naming_the_refusal(secret_world):
    items = {i["id"]: i for i in
             json.loads((secret_world["root"] / "plan" / "plan.json").read_text())["items"]}
    assert items["growth/plain.sql"]["status"] == "patched"
    for name in secret_world["views"]:
        item = items[f"growth/{name.split('.')[1]}.sql"]
        assert item["status"] in ("failed", "escalated"), (name, item)
        reason = item["reason"] or ""
        assert f"cannot read {name}" in reason, (name, reason)
    reasons = {name: items[f"growth/{name.split('.')[1]}.sql"]["reason"] for name in secret_world["views"]}
    for name in ("rpt.by_read_text", "rpt.by_read_csv", "rpt.by_file_name", "rpt.by_glob", "rpt.by_macro"):
        assert "disabled by configuration" in reasons[name], reasons[name]
    outcome = json.loads(secret_world["run"].stdout)
    assert outcome["applied"] == 1, outcome  # plain.sql only


def test_warehouse_reads_are_locked_down_and_limited(tmp_path):
    """The warehouse connection itself: no file access, configuration locked, time limit."""
    from skein.errors import WarehouseError
    from skein.warehouse import ReadLimits, open_warehouse

    make_warehouse(tmp_path)
    views = secret_views(tmp_path)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE SCHEMA rpt")
    con.execute(f"CREATE VIEW rpt.by_read_text AS {views['rpt.by_read_text']}")
    con.execute("CREATE VIEW rpt.forever AS SELECT count(*) AS n FROM range(100000000000) a, range(100000) b")
    con.close()
    warehouse = open_warehouse("duckdb:///wh.duckdb", tmp_path, ReadLimits(timeout_s=1))
    assert warehouse.schemas()["rpt.by_read_text"] == {"k": "INTEGER", "v": "VARCHAR"}
    with pytest.raises(WarehouseError, match="disabled by configuration") as refused:
        warehouse.read("SELECT * FROM rpt.by_read_text")
    assert SECRET not in str(refused.value)
    with pytest.raises(WarehouseError, match="disabled by configuration"):
        warehouse.read(f"SELECT content FROM read_text('{tmp_path}/secrets/secret.txt')")
    settings = warehouse.read("SELECT current_setting('enable_external_access') AS external, "
                              "current_setting('lock_configuration') AS locked").to_pylist()
    assert settings == [{"external": False, "locked": True}]
    with pytest.raises(WarehouseError, match="time limit"):
        warehouse.read("SELECT * FROM rpt.forever")


def test_monitoring_and_the_gate_read_views_inside_the_sandbox_too(tmp_path):
    """Monitoring's world (``load_worlds`` without an old world) and the gate's samples
    (``WarehouseSamples``) read through the same locked-down connection."""
    from skein.errors import WarehouseError
    from skein.simulation.sandbox import Sandbox
    from skein.simulation.worlds import WarehouseSamples, load_worlds, open_campaign_warehouse
    from skein.spec import load_campaign

    make_warehouse(tmp_path)
    views = secret_views(tmp_path)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute(f"CREATE SCHEMA rpt; CREATE VIEW rpt.by_read_text AS {views['rpt.by_read_text']}")
    con.close()
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    campaign = load_campaign(tmp_path / "c.yaml")
    inputs = ["analytics_v2.plays", "rpt.by_read_text"]
    with Sandbox() as world:
        unreadable = load_worlds(campaign, open_campaign_warehouse(campaign), inputs,
                                 "analytics.plays", "analytics_v2.plays", None, world)
        tables = {r[0] for r in world.connection.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert list(unreadable) == ["rpt.by_read_text"] and "disabled by configuration" in unreadable["rpt.by_read_text"]
    assert tables == {"plays"}  # the target only
    samples = WarehouseSamples(campaign, ["rpt.by_read_text"])
    assert samples["analytics.plays"].num_rows == 50
    with pytest.raises(WarehouseError, match="disabled by configuration") as refused:
        samples["rpt.by_read_text"]
    assert SECRET not in str(refused.value)


# --- item 6: the parse budget -------------------------------------------------------------

def chained_ctes(size: int) -> str:
    parts = ["WITH c0 AS (SELECT user_id, ms_played FROM analytics.plays)"]
    while sum(map(len, parts)) < size:
        parts.append(f",\nc{len(parts)} AS (SELECT user_id, ms_played FROM c{len(parts) - 1})")
    return "".join(parts) + f"\nSELECT user_id FROM c{len(parts) - 1}\n"


def repeated(head: str, item: str, glue: str, size: int, tail: str = "\n") -> str:
    return head + glue.join([item] * ((size - len(head)) // (len(item) + len(glue)))) + tail


# The issue's inputs, at its sizes: what each cost before the budget.
ISSUE_INPUTS = {
    "ctes_254k.sql": lambda: chained_ctes(254_000),  # 3 GB
    "ctes_828k.sql": lambda: chained_ctes(828_000),  # more than 7 GB, then a MemoryError traceback
    "plus_64k.sql": lambda: repeated("SELECT ", "a", "+", 64_000, " FROM analytics.plays\n"),  # 25 s
    "union_960k.sql": lambda: repeated("", "SELECT user_id FROM analytics.plays", "\nUNION ALL ",
                                       960_000),  # more than 400 s, SIGINT ignored
    "and_960k.sql": lambda: repeated("SELECT user_id FROM analytics.plays WHERE ", "user_id > 1",
                                     " AND ", 960_000),  # the same
    # Not parseable: found by the names it mentions, where one 500 KB name took hours to scan.
    "one_name_500k.sql": lambda: "SELEC " + "a" * 500_000 + " FROM analytics.plays\n",
}
PEAK_LIMIT_MB = 600


@pytest.fixture(scope="module")
def complex_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("complex")
    make_warehouse(root)
    files = {name: make() for name, make in ISSUE_INPUTS.items()}
    assert all(len(text) < 1 << 20 for text in files.values())  # under the 1 MiB file limit
    make_git_repo(root / "repos" / "growth", {**files, "plain.sql": READER})
    (root / "c.yaml").write_text(CAMPAIGN)
    return root


def test_inputs_of_the_issues_sizes_are_escalated_in_bounded_memory(complex_world):
    """``skein discover`` on all of them at once, in a child process whose peak memory
    (VmHWM: ru_maxrss would carry the forking pytest worker's peak) is its own."""
    probe = ("import re, sys\nfrom pathlib import Path\nfrom skein.cli import main\n"
             f"code = main(['discover', {str(complex_world / 'c.yaml')!r}, '--json', '--workers', '1'])\n"
             "peak = re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1]\n"
             "print(f'exit {code} peak {peak}', file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "SKEIN_HOME": str(complex_world / "home")})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    code, peak_kb = done.stderr.split()[-3], int(done.stderr.split()[-1])
    assert code == "0"
    assert peak_kb < PEAK_LIMIT_MB * 1024, f"peak {peak_kb // 1024} MB"
    items = {c["id"]: c for c in json.loads(done.stdout)["consumers"]}
    assert items["growth/plain.sql"]["status"] == "rewrite"
    reasons = {name: items[f"growth/{name}"]["reason"] for name in ISSUE_INPUTS}
    assert all(items[f"growth/{name}"]["status"] == "escalate" for name in ISSUE_INPUTS)
    assert reasons["ctes_254k.sql"].startswith("cannot analyse: too complex: ")
    assert "CTEs, limit 500" in reasons["ctes_254k.sql"]
    assert "tokens, limit 100,000" in reasons["ctes_828k.sql"]
    assert "levels deep, limit 1,000" in reasons["plus_64k.sql"]
    assert "tokens, limit 100,000" in reasons["union_960k.sql"]
    assert "tokens, limit 100,000" in reasons["and_960k.sql"]
    assert reasons["one_name_500k.sql"].startswith("cannot analyse: does not parse")


@pytest.mark.parametrize("name", ["ctes_254k.sql", "plus_64k.sql", "and_960k.sql"])
def test_skein_rewrite_escalates_a_too_complex_file(complex_world, name, capsys):
    """``skein rewrite CAMPAIGN FILE`` (a consumer's own CI) parses the file itself."""
    file = complex_world / "repos" / "growth" / name
    assert skein(["rewrite", str(complex_world / "c.yaml"), str(file)]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"skein: {file}: escalated: too complex: ") and "Traceback" not in err


def test_a_deep_but_narrow_query_under_the_budget_is_still_rewritten(complex_world, capsys):
    """The limits leave room: 600 ANDs (600 levels) and 400 CTEs are rewritten as usual."""
    file = complex_world / "deep.sql"
    ctes = ", ".join(f"c{i} AS (SELECT user_id FROM analytics.plays)" for i in range(400))
    ands = " AND ".join(f"ms_played > {i}" for i in range(600))
    file.write_text(f"WITH {ctes}\nSELECT user_id FROM analytics.plays WHERE {ands}\n")
    assert skein(["rewrite", str(complex_world / "c.yaml"), str(file)]) == 0
    out = capsys.readouterr().out
    assert "FROM analytics_v2.plays WHERE (duration_s * 1000) > 0 AND" in out


@pytest.mark.parametrize("consumers, workers", [(60, 1), (210, 2)], ids=["in-process", "process-pool"])
def test_sigint_stops_a_long_discovery_with_exit_130_and_no_traceback(tmp_path, consumers, workers):
    """Each consumer is under the budget but costs about a second to resolve: Ctrl-C (SIGINT
    to the process group) while discovery is among them ends ``skein discover`` with 130
    (sqlglot is compiled: a call longer than the budget allows would hold the signal back).
    From 200 consumers discovery parses in worker processes: they end with it, silently."""
    import signal
    import time

    make_warehouse(tmp_path)
    slow = "SELECT user_id FROM analytics.plays WHERE " + " AND ".join(
        f"ms_played > {i}" for i in range(990)) + "\n"
    make_git_repo(tmp_path / "repos" / "growth", {f"q{i:03}.sql": slow for i in range(consumers)})
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    child = subprocess.Popen([sys.executable, "-m", "skein.cli", "discover", str(tmp_path / "c.yaml"),
                              "--workers", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "SKEIN_HOME": str(tmp_path / "home")},
                             start_new_session=True)
    time.sleep(8)  # imports and the scan take a few seconds; the analyses a minute or more
    assert child.poll() is None, child.communicate()
    os.killpg(child.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to every process of the group
    out, err = child.communicate(timeout=120)  # only guards against a hang
    assert child.returncode == 130, (child.returncode, err[-3000:])
    assert err == "skein: interrupted\n" and out == ""
    time.sleep(1)
    with pytest.raises(ProcessLookupError):  # no worker left behind
        os.killpg(child.pid, 0)


def test_the_deadline_between_phases_escalates_with_the_phase(monkeypatch):
    """The wall-clock limit, checked between phases (here: none left at all)."""
    from skein import sqlbudget
    from skein.agents.rule import rewrite
    from skein.lineage import analyze_sql
    from skein.rewrite.request import Escalation
    from skein.rewrite.testing import example_request

    monkeypatch.setattr(sqlbudget, "MAX_SECONDS", 0)
    lineage = analyze_sql(READER, "duckdb", {"analytics.plays": {"user_id": "INT", "ms_played": "INT"}})
    assert lineage.error == "too complex: still analysing after 0 s (at column resolution), limit 0 s"
    assert lineage.reads == {}  # found by what it names, like SQL that does not parse
    result = rewrite(example_request(READER, {"user_id": "account_id"}))
    assert isinstance(result, Escalation)
    assert result.reason == "too complex: still analysing after 0 s (at the rules' edits), limit 0 s"
