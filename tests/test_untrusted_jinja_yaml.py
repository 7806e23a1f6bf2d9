"""Issue 18, items 1, 6 (YAML) and 8 (YAML): a consumer repository is untrusted input.

Its dbt Jinja runs no code in Skein (sandboxed, in a limited child process per project), its
YAML cannot exhaust memory (a budget on expanded values and text), and a malformed file
escalates that repository's consumers with the file and line instead of stopping the
campaign. Every test runs ``skein``'s own entry point on a small real world: a DuckDB
warehouse, git repositories and a campaign file under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import make_git_repo
from skein.cli import main as skein
from test_bad_input import CAMPAIGN, READER

MODEL = "select user_id, ms_played\nfrom {{ source('analytics', 'plays') }}\n"
DBT = {
    "dbt_project.yml": "name: shop\nprofile: shop\nmodel-paths: [models]\nvars: {min_ms: 0}\n",
    "profiles.yml": "shop:\n  target: dev\n  outputs:\n    dev: {type: duckdb, schema: dbt}\n",
    "models/sources.yml": "version: 2\nsources:\n  - name: analytics\n    tables:\n"
                          "      - name: plays\n  - name: analytics_v2\n    tables: [{name: plays}]\n",
    "models/stg_plays.sql": MODEL,
    "catalog-info.yaml": "kind: Component\nmetadata: {name: shop}\nspec: {owner: team-shop}\n",
}
HOSTILE = "shop-evil/models/stg_plays.sql"
OTHERS = ("growth/a.sql", "shop-ok/models/stg_plays.sql")


@pytest.fixture
def world(tmp_path, monkeypatch) -> Path:
    """A campaign over a plain SQL repository and a healthy dbt project."""
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2")
    con.execute("CREATE TABLE analytics.plays AS SELECT i AS user_id, i * 1000 AS ms_played, "
                "false AS legacy_flag FROM range(50) t(i)")
    con.execute("CREATE TABLE analytics_v2.plays AS SELECT i AS account_id, i AS duration_s "
                "FROM range(50) t(i)")
    con.close()
    make_git_repo(tmp_path / "repos" / "growth", {"a.sql": READER})
    make_git_repo(tmp_path / "repos" / "shop-ok", DBT)
    monkeypatch.setenv("SKEIN_HOME", str(tmp_path / "home"))
    campaign = tmp_path / "c.yaml"
    campaign.write_text(CAMPAIGN)
    return campaign


def add_repo(world: Path, name: str, files: dict[str, str | bytes]) -> Path:
    texts = {k: v for k, v in files.items() if isinstance(v, str)}
    root = world.parent / "repos" / name
    root.mkdir(parents=True)
    for rel, data in files.items():
        if isinstance(data, bytes):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
    return make_git_repo(root, texts)


def discover(world: Path, capsys) -> tuple[dict[str, dict], dict]:
    code = skein(["discover", str(world), "--json", "--workers", "1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    return {c["id"]: c for c in report["consumers"]}, report


def assert_others_migrate(by_id: dict[str, dict]) -> None:
    for consumer in OTHERS:
        assert by_id[consumer]["status"] == "rewrite", by_id[consumer]


# --- item 1: no code runs from a consumer's Jinja; what breaks a limit is an escalation --------

SYSTEM = "{{ cycler.__init__.__globals__.os.system('id > MARKER') }}"
PAYLOADS = {  # id: (where the payload is, the payload, what the reason says)
    "os.system in a macro file": ("macro file", SYSTEM, "cannot load project macros"),
    "os.system in the model": ("model", SYSTEM, "unsafe"),
    "os.popen in a called macro": (
        "called macro", "{{ lipsum.__globals__['os'].popen('id > MARKER').read() }}", "unsafe"),
    "namespace walk": ("model", "{{ namespace.__init__.__globals__.os.system('id > MARKER') }}",
                       "unsafe"),
    "str.format walk": ("model", "{{ '{0.__init__.__globals__}'.format(cycler) }}", "unsafe"),
    "1/0": ("model", "{{ 1/0 }}", "ZeroDivisionError: division by zero"),
    "recursion": ("called macro", "{{ evil() }}", "recursion too deep"),
    "'x' * 10**9": ("model", "{{ 'x' * 10**9 }}", "repetition would build 1,000,000,000"),
    "[0] * 10**9": ("model", "{{ [0] * 10**9 }}", "repetition would build"),
    "range(10**9)": ("model", "{{ range(10**9) | list }}", "Range too big"),
    "10 ** 10**10": ("model", "{{ 10 ** (10 ** 10) }}", "a power of more than 4096 bits"),
    "ljust": ("model", "{{ 'x'.ljust(10**9) }}", "str.ljust would build"),
    "huge join": ("model", "{{ range(100000) | join('x' * 1000) }}", "join would build"),
    "doubling": ("model", "{% set ns = namespace(s='x' * 1000) %}{% for i in range(40) %}"
                          "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
                 "(memory|time) limit"),  # which comes first depends on the machine's load
    "endless loop": ("model", "{% for i in range(100000) %}{% for j in range(100000) %}"
                              "{% endfor %}{% endfor %}", "time limit"),
}


def hostile_project(where: str, payload: str) -> dict[str, str]:
    files = dict(DBT)
    if where == "macro file":
        files["macros/evil.sql"] = payload + "\n"
    elif where == "called macro":
        files["macros/evil.sql"] = "{% macro evil() %}" + payload + "{% endmacro %}\n"
        files["models/stg_plays.sql"] = MODEL + "-- {{ evil() }}\n"
    else:
        files["models/stg_plays.sql"] = MODEL + "-- " + payload + "\n"
    return files


@pytest.fixture
def short_renders(monkeypatch):
    """A render's time limit of 2 s (10 s in production) keeps the endless loop's test short."""
    try:
        import skein.jinja_process
    except ImportError:  # the code before issue 18 had no renderer process (nor any limit)
        return
    monkeypatch.setattr(skein.jinja_process, "RENDER_SECONDS", 2)


@pytest.mark.parametrize("name", PAYLOADS)
def test_hostile_jinja_runs_no_code_and_escalates_that_consumer(world, tmp_path, capsys, name,
                                                                short_renders):
    where, payload, says = PAYLOADS[name]
    marker = tmp_path / "pwned"
    add_repo(world, "shop-evil", hostile_project(where, payload.replace("MARKER", str(marker))))

    by_id, _ = discover(world, capsys)

    assert not marker.exists()
    hostile = by_id[HOSTILE]
    assert hostile["status"] == "escalate"
    assert hostile["reason"].startswith("cannot analyse: ")
    assert re.search(says, hostile["reason"]), hostile["reason"]
    assert len(hostile["reason"]) < 600
    assert_others_migrate(by_id)


@pytest.mark.parametrize("name", ["os.system in the model", "os.popen in a called macro", "1/0",
                                  "'x' * 10**9"])
def test_the_rule_agent_runs_no_code_either(world, tmp_path, capsys, name):
    where, payload, says = PAYLOADS[name]
    marker = tmp_path / "pwned"
    repo = add_repo(world, "shop-evil", hostile_project(where, payload.replace("MARKER", str(marker))))

    code = skein(["rewrite", str(world), str(repo / "models" / "stg_plays.sql"), "--diff"])
    out = capsys.readouterr()

    assert not marker.exists()
    assert code == 3 and out.out == "", out.out  # escalated: no patch of it can be checked
    assert re.search(says, out.err) and "Traceback" not in out.err, out.err


def test_a_plan_escalates_the_hostile_model_and_migrates_the_rest(world, tmp_path, capsys):
    marker = tmp_path / "pwned"
    add_repo(world, "shop-evil", hostile_project("called macro", PAYLOADS[
        "os.popen in a called macro"][1].replace("MARKER", str(marker))))

    code = skein(["plan", str(world), "--out", str(tmp_path / "plan"), "--workers", "1"])

    assert code == 3 and not marker.exists()
    items = {i["id"]: i for i in json.loads((tmp_path / "plan" / "plan.json").read_text())["items"]}
    assert items[HOSTILE]["status"] == "escalated" and "unsafe" in items[HOSTILE]["reason"]
    assert {items[c]["status"] for c in OTHERS} == {"patched"}


def test_the_renderer_process_has_none_of_skeins_environment(tmp_path, monkeypatch):
    from skein.dbt import load_dbt_project

    secrets = {"SKEIN_STORE_URL": "postgresql://skein:hunter2@db/skein_store",
               "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:hunter2@db/airflow",
               "SKEIN_TEST_SECRET": "hunter2", "DATABASE_URL": "postgresql://x:hunter2@db/x"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    root = make_git_repo(tmp_path / "shop", DBT)
    project = load_dbt_project(root)
    pid = project.renderer_pid
    try:
        assert pid is not None and pid != os.getpid()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"hunter2" not in environ
        names = sorted(entry.split(b"=")[0].decode() for entry in environ.split(b"\0") if entry)
        assert names == ["LC_ALL", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONPATH"]
        assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]
        assert os.readlink(f"/proc/{pid}/cwd") != os.getcwd()
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert re.search(r"Max open files\s+3\s+3", limits)
        assert re.search(r"Max address space\s+805306368\s+805306368", limits)
        assert re.search(r"Max file size\s+0\s+0", limits)
        # env_var() never reads an environment: the default, or nothing
        assert project.render_snippet("{{ env_var('SKEIN_TEST_SECRET', 'd') }}", "this") == "d"
    finally:
        project.close()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_one_renderer_per_project_replaced_after_a_limit(tmp_path, short_renders):
    from skein.dbt import DbtRenderError, load_dbt_project

    models = {f"models/m{i:02}.sql": f"select {i} from {{{{ ref('m{i - 1:02}') }}}}\n"
              for i in range(1, 30)}
    root = make_git_repo(tmp_path / "shop", {**DBT, "models/m00.sql": MODEL, **models})
    project = load_dbt_project(root)
    try:
        pid = project.renderer_pid
        for rel in models:
            assert project.render(root / rel).sql.startswith("select ")
        assert project.renderer_pid == pid  # 30 config passes and 29 renders: one process
        with pytest.raises(DbtRenderError, match="time limit"):
            project.render_snippet("{% for i in range(100000) %}{% for j in range(100000) %}"
                                   "{% endfor %}{% endfor %}", "this")
        assert project.render(root / "models" / "m05.sql").sql == "select 5 from dbt.m04\n"
    finally:
        project.close()


# --- item 6: YAML bounded by its expanded size --------------------------------------------------

LIMITED = """\
import re, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
from skein.cli import main
code = main(sys.argv[1:])
print("PEAK", code, re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text())[1],
      file=sys.stderr)
"""


def run_limited(*args: str) -> tuple[int, str, str, int]:
    """``skein ARGS`` in a child limited to 1.5 GB: (exit code, stdout, stderr, peak kB)."""
    done = subprocess.run([sys.executable, "-c", LIMITED, *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ})
    peak = re.search(r"PEAK (\d+) (\d+)", done.stderr)
    assert peak, done.stderr[-3000:]
    return int(peak[1]), done.stdout, done.stderr, int(peak[2])


def anchor_campaign(repeat: int = 80_000) -> str:
    """A campaign under the documented limits (1 MiB, 100,000 values): one 2,000-character
    anchor repeated ``repeat`` times, gigabytes once expanded."""
    return (CAMPAIGN + "description: &d '" + "x" * 2000 + "'\n"
            + "tags: [" + ", ".join(["*d"] * repeat) + "]\n")


def test_a_campaign_whose_aliases_expand_to_gigabytes_is_refused(tmp_path):
    campaign = tmp_path / "c.yaml"
    campaign.write_text(anchor_campaign())
    assert campaign.stat().st_size < 1 << 20

    code, out, err, peak_kb = run_limited("validate", "--offline", str(campaign))

    assert code == 2
    line = CAMPAIGN.count("\n") + 1  # the anchor's line: each alias is that node again
    assert f"{campaign}:{line}: more than 4 MiB of text once YAML aliases are expanded" in err
    assert len(err) < 2000 and len(out) < 2000  # never the expanded text
    assert peak_kb < 400 * 1024


def lol_bomb(levels: int, key: str) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\n{key}: *a{levels - 1}\n"


def test_a_catalog_info_alias_bomb_leaves_the_owner_unknown_in_bounded_memory(world, tmp_path):
    bomb = "kind: Component\n" + lol_bomb(9, "spec")
    assert len(bomb) < 500
    add_repo(world, "bombed", {"a.sql": READER, "catalog-info.yaml": bomb})

    code, out, err, peak_kb = run_limited("discover", str(world), "--json", "--workers", "1")

    assert code == 0, err[-2000:]
    report = json.loads(out)
    assert len(out) < 200_000 and peak_kb < 600 * 1024
    by_id = {c["id"]: c for c in report["consumers"]}
    assert by_id["bombed/a.sql"]["status"] == "rewrite" and by_id["bombed/a.sql"]["owner"] == "unowned"
    assert any(re.search(r"bombed/catalog-info.yaml:\d+: more than 400,000 values", p)
               for p in report["problems"]), report["problems"]
    assert_others_migrate(by_id)


def test_a_too_large_campaign_is_an_import_error_of_that_file_only(tmp_path):
    from test_dag_integrity import VALID, dagbag, write_campaigns

    campaigns = write_campaigns(tmp_path / "campaigns", VALID)
    bomb = VALID["alpha.yaml"].replace("campaign: alpha", "campaign: gamma")
    (campaigns / "gamma.yaml").write_text(
        __import__("textwrap").dedent(bomb).lstrip() + "tags: &d ['" + "x" * 2000 + "']\n"
        + "extra: [" + ", ".join(["*d"] * 80_000) + "]\n")

    bag = dagbag(tmp_path, campaigns)

    assert sorted(bag["dags"]) == ["skein__alpha", "skein__beta"]
    assert list(bag["errors"]) == ["skein_campaign_errors.py"]
    error = bag["errors"]["skein_campaign_errors.py"]
    assert f"{campaigns}/gamma.yaml:" in error and "once YAML aliases are expanded" in error
    assert len(error) < 5000


# --- items 6 and 8: malformed consumer YAML escalates that repository, named by file and line ---

BOMB_VARS = lol_bomb(9, "vars").replace("a0:", "name: shop\nprofile: shop\na0:")
LONG_ANCHOR = ("name: shop\nprofile: shop\nnote: &n '" + "x" * 2000 + "'\nvars:\n"
               + "".join(f"  v{i}: *n\n" for i in range(9000)))
MALFORMED = {  # id: (file, content, what the reason says: "file:line: ...")
    "project: bad syntax": ("dbt_project.yml", "name: shop\nvars: {a: [1\n",
                            r"dbt_project.yml:\d: invalid YAML"),
    "project: a list": ("dbt_project.yml", "- name\n- shop\n",
                        "dbt_project.yml:1: expected a mapping of settings, got a list"),
    "project: models a list": ("dbt_project.yml", "name: shop\nmodels: [a]\n",
                               "dbt_project.yml:2: models: expected a mapping, got a list"),
    "project: vars a list": ("dbt_project.yml", "name: shop\nvars: [1, 2]\n",
                             "dbt_project.yml:2: vars: expected a mapping of names, got a list"),
    "project: profile a list": ("dbt_project.yml", "name: shop\nprofile: [shop]\n",
                                "dbt_project.yml:2: profile: expected a profile name, got a list"),
    "project: model-paths a string": ("dbt_project.yml", "name: shop\nmodel-paths: models\n",
                                      "dbt_project.yml:2: model-paths: expected a list of folders"),
    "project: model-paths outside": ("dbt_project.yml", "name: shop\nmodel-paths: [/etc]\n",
                                     "dbt_project.yml:2: model-paths.0: '/etc' is not a folder"),
    "project: name a mapping": ("dbt_project.yml", "name: {a: 1}\n",
                                "dbt_project.yml:1: name: expected a project name, got a mapping"),
    "project: null document": ("dbt_project.yml", "# nothing\n", "dbt_project.yml:1: the file is empty"),
    "project: not UTF-8": ("dbt_project.yml", b"name: shop\n# caf\xe9\n",
                           r"dbt_project.yml:2: not UTF-8 text \(byte 0xe9\)"),
    "project: alias bomb": ("dbt_project.yml", BOMB_VARS, "more than 400,000 values"),
    "project: long anchor": ("dbt_project.yml", LONG_ANCHOR,
                             "more than 16 MiB of text once YAML aliases are expanded"),
    "profiles: bad syntax": ("profiles.yml", "shop: [\n", r"profiles.yml:\d: invalid YAML"),
    "profiles: a list": ("profiles.yml", "- shop\n", "profiles.yml:1: expected a mapping of profiles"),
    "profiles: outputs a list": ("profiles.yml", "shop:\n  target: dev\n  outputs: [dev]\n",
                                 "profiles.yml:3: shop.outputs: expected a mapping of targets"),
    "profiles: target a list": ("profiles.yml", "shop:\n  target: [dev]\n",
                                "profiles.yml:2: shop.target: expected a target name"),
    "profiles: schema a mapping": ("profiles.yml", "shop:\n  outputs:\n    dev: {schema: {a: 1}}\n",
                                   "profiles.yml:3: shop.outputs.dev.schema: expected a schema name"),
    "profiles: null document": ("profiles.yml", "", "profiles.yml:1: the file is empty"),
    "profiles: not UTF-8": ("profiles.yml", b"\xff\xfeshop: {}\n", "profiles.yml:1: not UTF-8"),
    "sources: bad syntax": ("models/sources.yml", "sources:\n  - name: [\n",
                            r"sources.yml:\d: invalid YAML"),
    "sources: a mapping": ("models/sources.yml", "sources: {analytics: plays}\n",
                           "sources.yml:1: sources: expected a list of sources, got a mapping"),
    "sources: tables a number": ("models/sources.yml", "sources:\n  - name: analytics\n    tables: 5\n",
                                 "sources.yml:3: sources.0.tables: expected a list of tables"),
    "sources: table a string": ("models/sources.yml",
                                "sources:\n  - name: analytics\n    tables: [plays]\n",
                                "sources.yml:3: sources.0.tables.0: expected a table"),
    "sources: name missing": ("models/sources.yml", "sources:\n  - tables: []\n",
                              "sources.yml:2: sources.0.name: expected a source name, got nothing"),
    "sources: a list": ("models/sources.yml", "- a\n", "sources.yml:1: expected a mapping"),
    "sources: not UTF-8": ("models/sources.yml", b"sources: []\n# \xe9\n", "sources.yml:2: not UTF-8"),
    "sources: alias bomb": ("models/sources.yml", lol_bomb(9, "sources"), "more than 400,000 values"),
}
STILL_VALID = {  # files Skein reads as dbt does: the project migrates
    "project: BOM": ("dbt_project.yml", "\ufeff" + DBT["dbt_project.yml"]),
    "profiles: BOM": ("profiles.yml", "\ufeff" + DBT["profiles.yml"]),
    "sources: BOM": ("models/sources.yml", "\ufeff" + DBT["models/sources.yml"]),
    "project: merge keys": ("dbt_project.yml",
                            "base: &b {min_ms: 0}\nname: shop\nprofile: shop\nvars: {<<: *b}\n"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_dbt_yaml_escalates_that_project_with_file_and_line(world, capsys, name):
    file, content, says = MALFORMED[name]
    add_repo(world, "shop-evil", {**DBT, file: content})

    by_id, report = discover(world, capsys)

    hostile = by_id[HOSTILE]
    assert hostile["status"] == "escalate", hostile
    assert re.search(says, hostile["reason"]), hostile["reason"]
    assert "shop-evil/" in hostile["reason"] and len(hostile["reason"]) < 700
    assert any(re.search(says, p) for p in report["problems"])
    assert_others_migrate(by_id)


@pytest.mark.parametrize("name", STILL_VALID)
def test_valid_dbt_yaml_variants_still_migrate(world, capsys, name):
    file, content = STILL_VALID[name]
    add_repo(world, "shop-evil", {**DBT, file: content})
    by_id, _ = discover(world, capsys)
    assert by_id[HOSTILE]["status"] == "rewrite", by_id[HOSTILE]
    assert_others_migrate(by_id)


CATALOG = {  # id: (content, what the problem says); the owner falls back, the consumer migrates
    "bad syntax": ("spec: {owner: [x\n", r"catalog-info.yaml:\d: invalid YAML"),
    "a list": ("- kind\n- Component\n", "catalog-info.yaml:1: expected a mapping"),
    "spec a list": ("kind: Component\nspec: [x]\n", "catalog-info.yaml:2: spec: expected a mapping"),
    "metadata text": ("metadata: hello\nspec: {owner: t}\n",
                      "catalog-info.yaml:1: metadata: expected a mapping, got text"),
    "annotations a list": ("metadata:\n  annotations: [1]\nspec: {owner: t}\n",
                           "catalog-info.yaml:2: metadata.annotations: expected a mapping"),
    "owner a mapping": ("spec:\n  owner: {a: 1}\n", "catalog-info.yaml:2: spec.owner: expected text"),
    "not UTF-8": (b"spec: {owner: caf\xe9}\n", "catalog-info.yaml:1: not UTF-8"),
    "alias bomb": ("kind: Component\n" + lol_bomb(9, "spec"), "more than 400,000 values"),
}


@pytest.mark.parametrize("name", CATALOG)
def test_malformed_catalog_info_leaves_the_owner_unknown(world, capsys, name):
    content, says = CATALOG[name]
    add_repo(world, "shop-evil", {**DBT, "catalog-info.yaml": content})

    by_id, report = discover(world, capsys)

    assert by_id[HOSTILE]["status"] == "rewrite" and by_id[HOSTILE]["owner"] == "unowned"
    problem = next(p for p in report["problems"] if "shop-evil/catalog-info.yaml" in p)
    assert re.search(says, problem) and "owner unknown" in problem and len(problem) < 400
    assert_others_migrate(by_id)
    assert by_id["shop-ok/models/stg_plays.sql"]["owner"] == "team-shop"


def test_null_and_bom_catalog_info_are_read(world, capsys):
    add_repo(world, "shop-evil", {**DBT, "catalog-info.yaml": "\ufeff" + DBT["catalog-info.yaml"],
                                  "models/sub/catalog-info.yaml": "",
                                  "models/sub/q.sql": MODEL})
    by_id, report = discover(world, capsys)
    assert by_id[HOSTILE]["owner"] == "team-shop"
    assert by_id["shop-evil/models/sub/q.sql"]["owner"] == "team-shop"  # empty: the parent's
    assert not [p for p in report["problems"] if "catalog-info" in p]


PROFILE_BOMB = """\
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
from skein.dbt_packages import declared_packages
from skein.dbt_sandbox import DbtSandboxError, project_profile_name, target_schema
root = Path(sys.argv[1])
try:
    print("PROFILE", project_profile_name(root)[:100])
except DbtSandboxError as exc:
    print("REFUSED", str(exc)[:300])
print("SCHEMA", target_schema(root, "shop"), "PACKAGES", declared_packages(root))
"""


def test_the_dbt_core_reader_refuses_alias_bombs_before_building_them(tmp_path):
    """issue 19's reader (dbt-core in its sandbox) reads dbt_project.yml, profiles.yml and
    packages.yml in Skein's process: the same budget applies there (a bomb as `profile:`
    became a string of gigabytes)."""
    root = tmp_path / "shop"
    write = {"dbt_project.yml": lol_bomb(11, "profile"),
             "profiles.yml": lol_bomb(11, "shop"), "packages.yml": lol_bomb(11, "packages")}
    for name, text in write.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    done = subprocess.run([sys.executable, "-c", PROFILE_BOMB, str(root)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "REFUSED dbt_project.yml line 1: more than 400,000 values" in done.stdout
    assert "SCHEMA main PACKAGES []" in done.stdout
