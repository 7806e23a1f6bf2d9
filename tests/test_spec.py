"""Campaign files: every user error names file, line and field, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import duckdb
import pytest

from skein.cli import main
from skein.discovery import check_against_catalog
from skein.errors import SpecErrors
from skein.spec import campaign_json_schema, load_campaign

GOOD = """\
campaign: plays-v2
title: Move plays
owners: [data-platform]
warehouse: duckdb:///wh.duckdb
source: analytics.plays
target: analytics_v2.plays
columns:
  user_id: account_id
  ms_played: duration_s * 1000
  legacy_flag: null
consumers:
  - repo: repos/*
  - warehouse_views: true
"""


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path):
    with pytest.raises(SpecErrors) as info:
        load_campaign(path)
    return [e.render() for e in info.value.errors]


def test_good_campaign_loads_with_defaults(tmp_path):
    c = load_campaign(write(tmp_path, GOOD))
    assert c.campaign == "plays-v2"
    assert c.columns["legacy_flag"] is None
    assert c.rollout.schedule == "0 2 * * *"
    assert [w.name for w in c.rollout.waves] == ["canary", "everyone"]
    assert c.sql_dialect == "duckdb"
    assert c.path == (tmp_path / "c.yaml").resolve()


@pytest.mark.parametrize("edit, expected", [
    (("campaign: plays-v2", "campaign: Plays_V2"),
     "c.yaml:1: campaign: 'Plays_V2' must be lowercase letters, digits and dashes"),
    (("source: analytics.plays", "source: analytics.plays.x.y"),
     "c.yaml:5: source: 'analytics.plays.x.y' is not a dataset name like schema.table"),
    (("  ms_played: duration_s * 1000", "  ms_played: duration_s * "),
     "c.yaml:9: columns.ms_played: expression 'duration_s *' does not parse"),
    (("  ms_played: duration_s * 1000", "  ms_played: (SELECT 1)"),
     "c.yaml:9: columns.ms_played: expression '(SELECT 1)' must be a column expression"),
    (("  - warehouse_views: true", "  - warehouse_view: true"),
     "c.yaml:13: consumers[1].warehouse_view: unknown field"),
    (("  - repo: repos/*", "  - {repo: repos/*, warehouse_views: true}"),
     "c.yaml:12: consumers[0]: give exactly one of `repo: <glob>` or `warehouse_views: true`"),
    (("warehouse: duckdb:///wh.duckdb", "warehouse: mysql://x"),
     "c.yaml:4: warehouse: 'mysql://x': use duckdb:///path/to/file.duckdb"),
    (("title: Move plays\n", ""), "c.yaml:1: title: required field is missing"),
    (("target: analytics_v2.plays", "target: Analytics.Plays"),
     "c.yaml:1: source and target must differ"),
])
def test_each_spec_error_names_file_line_field(tmp_path, edit, expected):
    errors = errors_of(write(tmp_path, GOOD.replace(*edit)))
    assert any(expected in e for e in errors), errors
    assert all(e.startswith(str(tmp_path / "c.yaml")) for e in errors)


def test_rollout_errors(tmp_path):
    text = GOOD + textwrap.dedent("""\
        rollout:
          schedule: "0 2 *"
          error_threshold: 1.5
          waves:
            - {name: canary, share: 0.5}
            - {name: canary, share: 0.4}
        """)
    errors = errors_of(write(tmp_path, text))
    assert any("c.yaml:15: rollout.schedule: '0 2 *' is not a 5-field cron" in e for e in errors)
    assert any("c.yaml:16: rollout.error_threshold:" in e for e in errors)
    assert any("c.yaml:17: rollout.waves: wave shares must strictly increase" in e for e in errors)


def test_yaml_syntax_and_duplicate_keys(tmp_path):
    # libyaml ("did not find expected ...") or PyYAML's own parser ("expected ..., but got").
    [error] = errors_of(write(tmp_path, "campaign: [x\n"))
    assert error.startswith(f"{tmp_path / 'c.yaml'}:2: invalid YAML: ")
    assert "expected ',' or ']'" in error
    dup = errors_of(write(tmp_path, GOOD + "source: other.plays\n"))
    assert dup == [f"{tmp_path / 'c.yaml'}:14: source: duplicate key 'source'"]
    assert "must be a YAML mapping" in errors_of(write(tmp_path, "- a\n"))[0]


def test_merge_keys_and_unknown_tags_are_spec_errors_not_tracebacks(tmp_path):
    merged = errors_of(write(tmp_path, "base: &b {title: t}\n" + GOOD.replace("title: Move plays\n",
                                                                             "<<: *b\n")))
    assert merged == [f"{tmp_path / 'c.yaml'}:3: YAML merge keys (<<) are not supported"]
    [tag] = errors_of(write(tmp_path, GOOD.replace("title: Move plays", "title: !secret t")))
    assert tag.startswith(f"{tmp_path / 'c.yaml'}:2: invalid YAML: ") and "!secret" in tag


def test_missing_file(tmp_path):
    assert "cannot read file" in errors_of(tmp_path / "nope.yaml")[0]


@pytest.fixture
def warehouse(tmp_path):
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("""
        CREATE SCHEMA analytics; CREATE SCHEMA analytics_v2;
        CREATE TABLE analytics.plays (user_id BIGINT, ms_played BIGINT, legacy_flag BOOLEAN);
        CREATE TABLE analytics_v2.plays (account_id BIGINT, duration_s DECIMAL(12,3));
    """)
    con.close()
    return tmp_path


def catalog_errors(path):
    campaign = load_campaign(path)
    con = duckdb.connect(str(path.parent / "wh.duckdb"), read_only=True)
    rows = con.sql("SELECT table_schema||'.'||table_name, column_name FROM information_schema.columns").fetchall()
    con.close()
    schemas = {}
    for t, c in rows:
        schemas.setdefault(t, {})[c] = "x"
    with pytest.raises(SpecErrors) as info:
        check_against_catalog(campaign, schemas)
    return [e.render() for e in info.value.errors]


def test_catalog_checks(warehouse):
    path = write(warehouse, GOOD.replace("source: analytics.plays", "source: analytics.plyas"))
    assert catalog_errors(path) == [
        f"{path}:5: source: unknown dataset 'analytics.plyas' in duckdb:///wh.duckdb; "
        "did you mean 'analytics.plays'?"]
    path = write(warehouse, GOOD.replace("  user_id: account_id", "  usr_id: account_id")
                 .replace("duration_s * 1000", "duration_sec * 1000"))
    errors = catalog_errors(path)
    assert f"{path}:8: columns.usr_id: unknown column 'usr_id' in source analytics.plays " \
           "(columns: user_id, ms_played, legacy_flag)" in errors
    assert any(e.startswith(f"{path}:9: columns.ms_played: expression 'duration_sec * 1000' uses "
                            "'duration_sec', not a column of target") for e in errors)
    path = write(warehouse, GOOD.replace("target: analytics_v2.plays", "target: analytics_v3.plays"))
    assert catalog_errors(path) == [
        f"{path}:6: target: dataset 'analytics_v3.plays' does not exist in duckdb:///wh.duckdb "
        "and no `forward` query builds it"]


def test_forward_query_defines_target_columns(warehouse):
    text = GOOD.replace("target: analytics_v2.plays", "target: analytics_v3.plays") + \
        "forward: SELECT user_id AS account_id, ms_played / 1000 AS duration_s FROM analytics.plays\n"
    campaign = load_campaign(write(warehouse, text))
    schemas = {"analytics.plays": {"user_id": "x", "ms_played": "x", "legacy_flag": "x"}}
    check_against_catalog(campaign, schemas)  # no error: account_id and duration_s come from forward


def test_cli_reports_user_errors_without_traceback(tmp_path):
    path = write(tmp_path, GOOD.replace("campaign: plays-v2", "campaign: -bad"))
    proc = subprocess.run([sys.executable, "-m", "skein.cli", "validate", "--offline", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"skein: {path}:1: campaign: '-bad' must be lowercase")
    assert "Traceback" not in proc.stderr


def test_cli_missing_warehouse_names_field(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: warehouse: warehouse 'duckdb:///wh.duckdb': DuckDB file" in err


def test_schema_export(tmp_path, capsys):
    assert main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    schema = json.loads((tmp_path / "s.json").read_text())
    assert schema == campaign_json_schema()
    assert set(schema["required"]) >= {"campaign", "title", "owners", "warehouse", "source", "target"}
    assert "description" in schema["properties"]["columns"]


def test_every_schema_field_is_documented():
    import re
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "campaign-spec.md").read_text()
    documented = set(re.findall(r"^\| `([\w.\[\]]+)` \|", doc, re.M))
    schema = campaign_json_schema()

    def fields(props, prefix, defs):
        for name, prop in props.items():
            yield prefix + name
            ref = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
            ref = ref or next((a.get("$ref") or (a.get("items") or {}).get("$ref")
                               for a in prop.get("anyOf", []) if isinstance(a, dict)), None)
            if ref:
                sub = defs[ref.split("/")[-1]]
                suffix = "[]." if prop.get("type") == "array" or "items" in prop else "."
                yield from fields(sub.get("properties", {}), prefix + name + suffix, defs)

    expected = set(fields(schema["properties"], "", schema["$defs"]))
    assert expected - documented == set()


@pytest.mark.parametrize("data, line, message", [
    (b"campaign: ok\ntitle: caf\xe9\n", 2, "not UTF-8 text (byte 0xe9): save the file as UTF-8"),
    (b"campaign: ok\nowners: &o [a, *o]\n", 2, "a YAML alias refers to a collection it is inside"),
    (b"campaign: ok\n? [a, b]\n: 1\n", 2, "a mapping key must be a plain value"),
    (b"a: " + b"[" * 500 + b"]" * 500 + b"\n", 1, "nested more than 64 levels deep"),
    (b"campaign: ok\ntitle: a\x00b\n", 2, "invalid YAML: unacceptable character #x0000"),
    (b"campaign: ok\n[", 2, "invalid YAML: "),
], ids=["latin-1 byte", "recursive anchor", "list as key", "deep nesting", "NUL", "end of file"])
def test_hostile_yaml_is_a_spec_error_with_a_line(tmp_path, data, line, message):
    """Found by tests/test_property_campaign_files.py: these raised UnicodeDecodeError,
    RecursionError and TypeError (tracebacks from `skein validate`), or named no line or a
    line past the end of the file."""
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    [error] = errors_of(path)
    assert error.startswith(f"{path}:{line}: {message}"), error
    assert main(["validate", str(path), "--offline"]) == 2


def test_a_key_with_a_line_break_cannot_break_the_one_line_format(tmp_path):
    """Found by tests/test_property_campaign_files.py: an unknown key holding a line break
    was printed as is, so one problem took two lines (and a key could forge a line)."""
    path = tmp_path / "c.yaml"
    path.write_text(GOOD + '"x\\nc.yaml:1: all good": 1\n')
    [error] = errors_of(path)
    assert error == f"{path}:14: 'x\\nc.yaml:1: all good': unknown field (check the spelling; see docs/campaign-spec.md)"
    assert len(error.splitlines()) == 1
