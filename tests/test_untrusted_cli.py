"""Issue 18, items 7 (first part), 8 (the non-YAML tracebacks) and 9 (portal limits, BOM
consumers, null YAML keys): each input once ended in a traceback, a crash of the whole
campaign or a campaign taken over; each is now refused with one line naming file, line and
field (exit 2), or handled.

Runs go through ``skein``'s own entry point (``skein.cli.main``) in worlds built under
``tmp_path`` by ``tests/test_bad_input.py``'s ``world`` fixture.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import make_git_repo
from skein.cli import main as skein
from test_bad_input import CAMPAIGN, READER, commit_all, world  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, code: int, expected: str) -> str:
    """The command's exit code is 2 (or ``code``), stderr names ``expected`` on its own line,
    and holds no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert any(expected in line for line in err.splitlines()), err
    return err


# --- item 7: a campaign id names one campaign -----------------------------------------------

OTHER_APPROVERS = CAMPAIGN.replace("owners: [data-platform]",
                                   "owners: [data-platform]\nrollout: {approvers: [mallory]}")


def test_validate_refuses_two_files_with_one_id_naming_both(tmp_path, capsys):
    folder = tmp_path / "campaigns"
    make_git_repo(folder / "repos" / "growth", {"a.sql": READER})
    make_git_repo(tmp_path / "repos" / "growth", {"a.sql": READER})
    (folder / "plays-v2.yaml").write_text(CAMPAIGN)
    (folder / "a-takeover.yaml").write_text(OTHER_APPROVERS)
    (folder / "other.yaml").write_text(CAMPAIGN.replace("campaign: plays-v2", "campaign: other"))

    assert skein(["validate", "--offline", str(folder)]) == 2
    err = one_line_error(capsys, 2, f"{folder / 'a-takeover.yaml'}:1: campaign: id 'plays-v2' is "
                                    f"also the id of {folder / 'plays-v2.yaml'}")
    assert f"{folder / 'plays-v2.yaml'}:1: campaign: id 'plays-v2' is also the id of " \
           f"{folder / 'a-takeover.yaml'}" in err
    assert "other.yaml" not in err

    # one file, checked against what is deployed ($SKEIN_CAMPAIGNS_DIR)
    new = tmp_path / "new.yaml"
    new.write_text(OTHER_APPROVERS)
    (folder / "a-takeover.yaml").unlink()
    assert skein(["validate", "--offline", str(new)]) == 0
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SKEIN_CAMPAIGNS_DIR", str(folder))
        assert skein(["validate", "--offline", str(new)]) == 2
        one_line_error(capsys, 2, f"{new}:1: campaign: id 'plays-v2' is also the id of "
                                  f"{folder / 'plays-v2.yaml'}")
        # the deployed file itself is not its own duplicate
        assert skein(["validate", "--offline", str(folder / "plays-v2.yaml"), str(folder)]) == 0


def test_the_portal_serves_no_file_for_a_shared_id(tmp_path):
    from skein.store import CampaignStore
    from skein.views import Sources, campaign_ids, campaign_spec

    mine, theirs, other = (tmp_path / n for n in ("plays-v2.yaml", "a-takeover.yaml", "other.yaml"))
    mine.write_text(CAMPAIGN)
    theirs.write_text(OTHER_APPROVERS)
    other.write_text(CAMPAIGN.replace("campaign: plays-v2", "campaign: other"))
    src = Sources(store=CampaignStore("sqlite://"), home=tmp_path / "home",
                  campaign_files=(theirs, mine, other))
    assert campaign_ids(src) == ["other"]
    assert campaign_spec(src, "plays-v2") is None
    assert campaign_spec(src, "other").path == other.resolve()


# The DAG factory, through Airflow's own DagBag (tests/test_dag_integrity.py's probe)
def test_the_dag_factory_builds_no_dag_for_a_shared_id(tmp_path):
    from test_dag_integrity import VALID, dagbag, write_campaigns

    alpha = textwrap.dedent(VALID["alpha.yaml"])
    campaigns = write_campaigns(tmp_path / "campaigns", {
        **VALID, "a-takeover.yaml": alpha.replace("approvers: [alice, bob]", "approvers: [mallory]")})
    bag = dagbag(tmp_path, campaigns)
    assert sorted(bag["dags"]) == ["skein__beta"]
    error = bag["errors"]["skein_campaign_errors.py"]
    assert "2 campaign file(s)" in error
    assert (f"{campaigns}/a-takeover.yaml:1: campaign: id 'alpha' is also the id of "
            f"{campaigns}/alpha.yaml") in error
    assert (f"{campaigns}/alpha.yaml:1: campaign: id 'alpha' is also the id of "
            f"{campaigns}/a-takeover.yaml") in error
    assert "skein_campaigns.py" not in bag["errors"]


# --- item 8: inputs that ended in a traceback ------------------------------------------------

def campaign_with(world: Path, old: str, new: str) -> Path:
    assert old in world.read_text()
    world.write_text(world.read_text().replace(old, new))
    return world


SIMULATION = "consumers:\n"  # a campaign's extra settings go before its consumers


@pytest.mark.parametrize("setting, line, says", [
    ("simulation:\n  sample_rows: " + "9" * 5001,
     "12: simulation.sample_rows", "a number of 5001 digits: too long to read (at most 4300)"),
    ("simulation:\n  memory_limit: lots", "12: simulation.memory_limit", "'lots' is not a memory size"),
    ("simulation:\n  memory_limit: ''", "12: simulation.memory_limit", "'' is not a memory size"),
    ("simulation:\n  memory_limit: -1GB", "12: simulation.memory_limit", "'-1GB' is not a memory size"),
    ("simulation:\n  memory_limit: 99999999999TB", "12: simulation.memory_limit", "'99999999999TB' is more than 1 PiB"),
    ("simulation:\n  memory_limit: 1KB", "12: simulation.memory_limit", "'1KB' is below 16 MiB"),
    ("simulation:\n  sample_keys: {analytics.plays: ['']}", "12: simulation.sample_keys",
     "analytics.plays: '' is not a column name"),
    ("agents:\n  llm: {enabled: true, model: 'nosuch:x'}", "12: agents.llm.model",
     "'nosuch:x': unknown model provider 'nosuch'"),
    ("agents:\n  llm: {enabled: true, model: ''}", "12: agents.llm.model",
     "'' is not a pydantic-ai model name"),
    ("agents:\n  llm: {enabled: true, model: gpt-4.1}", "12: agents.llm.model",
     "'gpt-4.1' is not a pydantic-ai model name"),
])
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_values_plan_crashed_on_are_refused_by_validate_and_plan(world, tmp_path, capsys, command,
                                                                  setting, line, says):
    campaign_with(world, SIMULATION, setting + "\n" + SIMULATION)
    args = ["--out", str(tmp_path / "plan"), "--workers", "1"] if command == "plan" else []
    assert skein([command, str(world), *args]) == 2
    one_line_error(capsys, 2, f"{world}:{line}: {says}")
    assert not (tmp_path / "plan" / "plan.json").exists()


@pytest.mark.parametrize("setting, line, says", [
    ("simulation:\n  sample_rows: 10\n  sample_keys: {analytics.plays: [nosuch]}",
     "13: simulation.sample_keys.analytics.plays", "'nosuch': not a column of analytics.plays"),
    ("simulation:\n  sample_rows: 10\n  sample_keys: {analytics.nosuch: [user_id]}",
     "13: simulation.sample_keys.analytics.nosuch", "unknown dataset 'analytics.nosuch'"),
    # a provider pydantic-ai knows, whose package is not installed here
    ("agents:\n  llm: {enabled: true, model: 'openai:gpt-4.1'}", "12: agents.llm.model",
     "cannot use model 'openai:gpt-4.1' here: Please install the `openai` package"),
])
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_what_only_the_warehouse_or_environment_refutes_is_refused_by_both(
        world, tmp_path, capsys, command, setting, line, says):
    if "openai" in setting:
        pytest.importorskip("pydantic_ai")
        if _installed("openai"):
            pytest.skip("the openai package is installed here")
    campaign_with(world, SIMULATION, setting + "\n" + SIMULATION)
    args = ["--out", str(tmp_path / "plan"), "--workers", "1"] if command == "plan" else []
    assert skein([command, str(world), *args]) == 2
    one_line_error(capsys, 2, f"{world}:{line}: {says}")
    assert skein(["validate", "--offline", str(world)]) == 0  # the file alone is fine


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("size", ["16MiB", "1GB", " 1.5 gb ", "1024TiB"])
def test_every_memory_limit_validate_accepts_opens_a_sandbox(size):
    from skein.simulation.sandbox import Sandbox
    from skein.spec_values import sandbox_memory

    with Sandbox(memory_limit=sandbox_memory(size)) as sandbox:
        assert sandbox.connection.execute("SELECT 42").fetchall() == [(42,)]


@pytest.mark.parametrize("where", ["columns", "forward"])
def test_deeply_nested_campaign_sql_is_refused_with_its_line(world, capsys, where):
    deep = "(" * 3000 + "account_id" + ")" * 3000
    if where == "columns":
        campaign_with(world, "user_id: account_id", f"user_id: '{deep}'")
        expected = f"{world}:8: columns.user_id: expression '((((("
    else:
        campaign_with(world, SIMULATION, f"forward: 'SELECT {deep} FROM analytics.plays'\n" + SIMULATION)
        expected = f"{world}:11: forward: does not parse: nested too deeply"
    assert skein(["validate", "--offline", str(world)]) == 2
    err = one_line_error(capsys, 2, expected)
    assert where != "columns" or "(6010 characters) is nested too deeply" in err


def test_rewrite_with_an_unknown_dialect_is_a_user_error(world, capsys):
    growth = world.parent / "repos" / "growth"
    assert skein(["rewrite", str(world), str(growth / "a.sql"), "--dialect", "nosuch"]) == 2
    one_line_error(capsys, 2, "skein: --dialect: unknown SQL dialect 'nosuch'")


@pytest.mark.parametrize("out", ["/proc/self", "/proc/self/fd/below", "/dev/null"])
def test_plan_out_where_nothing_can_be_written_is_a_user_error(world, capsys, out):
    assert skein(["plan", str(world), "--out", out, "--workers", "1"]) == 2
    one_line_error(capsys, 2, f"skein: --out {out}: ")


def test_a_consumer_whose_file_name_is_not_utf8_is_escalated(world, tmp_path, capsys):
    growth = world.parent / "repos" / "growth"
    name = "dur\udce9e.sql"  # b"dur\xe9e.sql": Latin-1
    (growth / name).write_text(READER)
    commit_all(growth, "a Latin-1 file name")

    assert skein(["plan", str(world), "--out", str(tmp_path / "plan"), "--workers", "1"]) == 3
    assert "Traceback" not in capsys.readouterr().err
    items = {i["id"]: i for i in json.loads((tmp_path / "plan" / "plan.json").read_text())["items"]}
    assert items["growth/dur\\xe9e.sql"]["status"] == "escalated"
    assert ("file name growth/dur\\xe9e.sql is not UTF-8 (byte 0xe9): rename it"
            in items["growth/dur\\xe9e.sql"]["reason"])
    assert items["growth/a.sql"]["status"] == items["growth/b.sql"]["status"] == "patched"

    code = skein(["run", str(world), "--approve", "all", "--no-soak", "--json", "--workers", "1"])
    assert code == 3 and json.loads(capsys.readouterr().out)["applied"] == 2
    assert (growth / name).read_text() == READER  # escalated: never written


def test_a_campaign_file_whose_name_is_not_utf8_runs(world, tmp_path, capsys):
    latin1 = world.parent / "pl\udce4ys.yaml"
    world.rename(latin1)
    assert skein(["validate", str(latin1)]) == 0
    assert "ys.yaml: campaign plays-v2 is valid" in capsys.readouterr().out
    code = skein(["run", str(latin1), "--approve", "all", "--no-soak", "--json", "--workers", "1"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["applied"] == 2


# --- item 9: the portal's limits, on Airflow's own API app (in-process, no server) -----------

PORTAL_PROBE = textwrap.dedent('''
    import asyncio, json, sys
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    app = create_app()  # Airflow's API app, the portal mounted at /skein as in the api-server
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    MiB = 1 << 20

    def call(method, path, *, auth=True, body_mib=0, length=True, body=None):
        """(status, bytes of the body the app asked for) of one request, its body offered
        in 1 MiB chunks that are counted as the app receives them."""
        chunks = [body] if body is not None else [b"x" * MiB] * body_mib
        headers = [(b"host", b"testserver"), (b"content-type", b"application/json")]
        if auth:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        if chunks and length:
            headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
        elif chunks:
            headers.append((b"transfer-encoding", b"chunked"))
        read, sent, status = [0], list(chunks), []
        path, _, query = path.partition("?")

        async def receive():
            if sent:
                chunk = sent.pop(0)
                read[0] += len(chunk)
                return {"type": "http.request", "body": chunk, "more_body": bool(sent)}
            await asyncio.sleep(3600)

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": query.encode(), "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {}}

        async def run():
            try:
                await app(scope, receive, send)
            except Exception:  # Starlette re-raises what it answered with a 500
                status.append(500)

        asyncio.run(run())
        return status[0], read[0]

    api = "/skein/api/v1/campaigns/plays-v2"
    huge = "99999999999999999999"
    out = {
        "anonymous 40 MB": call("POST", api + "/pause", auth=False, body_mib=40),
        "anonymous 40 MB chunked": call("POST", api + "/pause", auth=False, body_mib=40, length=False),
        "40 MB": call("POST", api + "/pause", body_mib=40),
        "40 MB chunked": call("POST", api + "/pause", body_mib=40, length=False),
        "a reason": call("POST", api + "/pause", body=b'{"reason": "owners asked"}'),
        "offset": call("GET", api + "/consumers?offset=" + huge),
        "tier": call("GET", api + "/consumers?tier=" + huge),
        "limit": call("GET", api + "/consumers?limit=-1"),
        "audit offset": call("GET", api + "/audit?offset=" + huge),
        "page offset": call("GET", "/skein/campaigns/plays-v2?offset=" + huge),
        "page tier": call("GET", "/skein/campaigns/plays-v2?tier=-" + huge),
        "largest offset": call("GET", api + "/consumers?offset=2147483647"),
    }
    print("PROBE " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def portal_probe(tmp_path_factory):
    """The probe's results, on a migrated SQLite metadata DB and one campaign file."""
    tmp = tmp_path_factory.mktemp("portal")
    (tmp / "campaigns").mkdir()
    (tmp / "campaigns" / "plays-v2.yaml").write_text(CAMPAIGN)
    env = {**{k: v for k, v in __import__("os").environ.items() if not k.startswith("AIRFLOW")},
           "AIRFLOW_HOME": str(tmp / "airflow"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp}/airflow/airflow.db",
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(tmp / "no-dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
           "SKEIN_CAMPAIGNS_DIR": str(tmp / "campaigns"), "SKEIN_HOME": str(tmp / "skein")}
    airflow = Path(sys.executable).parent / "airflow"
    migrate = subprocess.run([airflow, "db", "migrate"], capture_output=True, text=True, env=env,
                             timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-c", PORTAL_PROBE], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PROBE "))
    return {k: tuple(v) for k, v in json.loads(line.removeprefix("PROBE ")).items()}


def test_an_anonymous_body_is_refused_before_a_byte_of_it_is_read(portal_probe):
    assert portal_probe["anonymous 40 MB"] == (401, 0)
    assert portal_probe["anonymous 40 MB chunked"] == (401, 0)


def test_a_body_over_64_kib_is_refused_without_reading_it_whole(portal_probe):
    assert portal_probe["40 MB"] == (413, 0)  # by its Content-Length
    status, read = portal_probe["40 MB chunked"]
    assert status == 413 and read <= 64 * 1024 + (1 << 20)  # one chunk past the limit
    status, read = portal_probe["a reason"]  # an action's body still reaches the route
    assert status == 200 and read == len(b'{"reason": "owners asked"}')


@pytest.mark.parametrize("case", ["offset", "tier", "limit", "audit offset", "page offset",
                                  "page tier"])
def test_huge_or_negative_integers_in_a_query_are_422_never_500(portal_probe, case):
    assert portal_probe[case][0] == 422


def test_the_largest_offset_accepted_is_answered(portal_probe):
    assert portal_probe["largest offset"][0] == 200


# --- item 9: a BOM consumer, a null YAML key --------------------------------------------------

def test_a_consumer_with_a_bom_is_migrated_and_keeps_its_bom(world, tmp_path, capsys):
    growth = world.parent / "repos" / "growth"
    (growth / "bom.sql").write_bytes(b"\xef\xbb\xbf" + READER.encode())
    commit_all(growth, "a file saved with a byte-order mark")

    assert skein(["plan", str(world), "--out", str(tmp_path / "plan"), "--workers", "1"]) == 0
    items = {i["id"]: i for i in json.loads((tmp_path / "plan" / "plan.json").read_text())["items"]}
    assert (items["growth/bom.sql"]["status"], items["growth/bom.sql"]["simulation"]) == ("patched", "pass")
    capsys.readouterr()

    code = skein(["run", str(world), "--approve", "all", "--no-soak", "--json", "--workers", "1"])
    assert code == 0 and json.loads(capsys.readouterr().out)["applied"] == 3
    migrated = (growth / "bom.sql").read_bytes()
    assert migrated.startswith(b"\xef\xbb\xbfSELECT ") and b"analytics_v2.plays" in migrated
    assert migrated[3:] == (growth / "a.sql").read_bytes()  # the same rewrite, BOM kept


@pytest.mark.parametrize("key", ["~", "null", "2.5"])
def test_a_null_or_number_key_is_reported_on_its_own_line(world, capsys, key):
    campaign_with(world, SIMULATION, f"rollout:\n  {key}: x\n" + SIMULATION)
    assert skein(["validate", "--offline", str(world)]) == 2
    name = "None" if key in ("~", "null") else key
    one_line_error(capsys, 2, f"{world}:12: rollout.{name}: a key must be text: quote it")


# --- item 8, more: hostile arguments found by trying every sub-command ------------------------

def exit_code(args: list[str]) -> int:
    """``skein ARGS``'s exit code, argparse's own refusals (SystemExit) included."""
    try:
        return skein(args)
    except SystemExit as done:
        return done.code


@pytest.mark.parametrize("args, says", [
    (["validate", "--offline", ""], "skein: an empty path: name a campaign file or a folder"),
    (["plan", "{world}", "--out", ""], "skein: --out: an empty path"),
    (["discover", "{world}", "--workers", "0"], "argument --workers: '0' is not a number of processes"),
    (["plan", "{world}", "--out", "{tmp}/p", "--workers", "99999999999999999999"],
     "argument --workers: '99999999999999999999' is not a number of processes from 1 to 256"),
    (["run", "{world}", "--dry-run", "--error-threshold", "nan"], "'nan' is not a share from 0 to 1"),
    (["run", "{world}", "--dry-run", "--error-threshold", "5"], "'5' is not a share from 0 to 1"),
    (["run", "{world}", "--approve", "all", "--waves", "nosuch"],
     "skein: --waves: 'nosuch': not a wave of the campaign (its waves: canary, everyone)"),
    (["unlock", "plays-v2", "--store", "mysql://nobody@127.0.0.1/x"],
     "skein: cannot open the campaign store mysql://nobody@127.0.0.1/x: No module named"),
    (["demo-fleet", "--out", "{tmp}/demo", "--consumers", "99999999999"],
     "skein: --consumers must be from 1 to 100,000, not 99999999999"),
])
def test_hostile_arguments_are_one_line_user_errors(world, tmp_path, capsys, args, says):
    args = [a.format(world=world, tmp=tmp_path) for a in args]
    assert exit_code(args) == 2
    one_line_error(capsys, 2, says)
    assert not list((tmp_path / "home").rglob("campaign.yaml"))  # no run was started
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("make", ["device", "fifo"])
def test_a_campaign_file_that_is_not_a_regular_file_is_refused(tmp_path, make):
    """/dev/zero never ends (it was read until the kernel killed skein), a FIFO blocks."""
    import os

    path = Path("/dev/zero")
    if make == "fifo":
        path = tmp_path / "c.yaml"
        os.mkfifo(path)
    done = subprocess.run([sys.executable, "-m", "skein.cli", "validate", "--offline", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"skein: {path}: not a regular file" in done.stderr


@pytest.mark.parametrize("args", [
    ["validate", "--offline", "c\0.yaml"], ["plan", "{world}", "--out", "p\0"],
    ["schema", "--out", "s\0.json"], ["demo-fleet", "--out", "d\0"],
    ["run", "{world}", "--dry-run", "--store", "sqlite:///s\0.db"],
])
def test_a_nul_byte_in_an_argument_is_a_user_error(world, capsys, args):
    """No shell passes one, but ``skein.cli.main(argv)`` is a Python API too (os.stat raised)."""
    assert exit_code([a.format(world=world) for a in args]) == 2
    one_line_error(capsys, 2, "skein: an argument holds a NUL byte")
