"""Property: any campaign file, valid or hostile, gives a valid spec or skein's own error.

Generated documents start from a valid campaign and are then damaged: wrong types, unknown
and missing fields, bad ids and dataset names, huge and odd strings (control characters,
right-to-left marks, lone surrogates escaped in YAML), shared and recursive anchors,
deep nesting, and byte-level damage (non-UTF-8 bytes, a BOM, NUL, truncation, CRLF, tabs,
repeated and merged keys). Each is written to a file and loaded the way ``skein validate
--offline`` loads it: the result is a ``Campaign`` or ``SpecErrors`` whose every error names
the file and a line inside it; the CLI prints ``file:line: ...`` and exits 2, never a
traceback. 1,000 generated files per property (``ci`` profile, tests/conftest.py).
"""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import event, example, given
from hypothesis import strategies as st

from skein.catalog import repository_problems
from skein.cli import main
from skein.errors import SpecError, SpecErrors
from skein.spec import Campaign, load_campaign

# -- valid campaigns ------------------------------------------------------------------

IDENT = st.from_regex(r"\A[a-z_][a-z0-9_]{0,10}\Z")
CAMPAIGN_IDS = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?\Z")
DATASETS = st.builds(lambda s, t: f"{s}.{t}", IDENT, IDENT)
EXPRESSIONS = st.one_of(IDENT, st.sampled_from([
    "account_id", "duration_s * 1000", "CAST(duration_s * 1000 AS BIGINT)", "lower(country)",
    "CASE WHEN x > 0 THEN 1 ELSE 0 END", "coalesce(a, b, 0)", "a || '-' || b", "x::int",
    "SELECT 1", "a +", "((x)", "", "   "]))  # the last ones do not parse or are not expressions


def _waves(shares: list[float], names: list[str]) -> list[dict]:
    cut = sorted(set(round(s, 3) for s in shares if 0 < round(s, 3) < 1)) + [1.0]
    return [{"name": f"{names[i % len(names)]}{i}", "share": s} for i, s in enumerate(cut)]


ROLLOUTS = st.fixed_dictionaries({}, optional={
    "schedule": st.sampled_from(["0 2 * * *", "@daily", None, "*/5 * * * 1-5"]),
    "approvers": st.lists(IDENT, max_size=3),
    "error_threshold": st.floats(0, 1),
    "waves": st.builds(_waves, st.lists(st.floats(0.01, 0.99), max_size=4),
                       st.lists(IDENT, min_size=1, max_size=3)),
    "approve_each_wave": st.booleans(),
})
CONSUMERS = st.lists(st.one_of(
    st.fixed_dictionaries({"repo": st.sampled_from(["repos/*", "r", "a/b/*"])},
                          optional={"dialect": st.sampled_from(["duckdb", "bigquery", "snowflake"]),
                                    "exclude": st.lists(st.sampled_from(["archive/**", "*.tmp"]))}),
    st.builds(lambda: {"warehouse_views": True})), min_size=1, max_size=3)

def _distinct_datasets(doc: dict) -> dict:
    if doc["target"] == doc["source"]:
        doc["target"] += "_v2"
    return doc


VALID = st.fixed_dictionaries({
    "campaign": CAMPAIGN_IDS,
    "title": st.text(min_size=1, max_size=30).filter(str.strip),
    "owners": st.lists(IDENT, min_size=1, max_size=3),
    "warehouse": st.sampled_from(["duckdb:///wh.duckdb", "postgresql://u@h:5432/db"]),
    "source": DATASETS,
    "target": DATASETS,
    "columns": st.dictionaries(IDENT, st.one_of(st.none(), EXPRESSIONS), max_size=4),
}, optional={
    "description": st.text(max_size=60),
    "dialect": st.sampled_from(["duckdb", "postgres", "bigquery"]),
    "forward": st.sampled_from(["SELECT * FROM a.b", "SELECT x AS y FROM a.b WHERE z > 1"]),
    "consumers": CONSUMERS,
    "rollout": ROLLOUTS,
    "agents": st.builds(lambda: {"llm": {"enabled": False, "attempts": 2}}),  # fresh: edits mutate
    "simulation": st.fixed_dictionaries({}, optional={
        "sample_rows": st.integers(1, 10**6), "rel_tol": st.floats(0, 0.5),
        "sample_keys": st.dictionaries(DATASETS, st.lists(IDENT, max_size=2), max_size=2)}),
    "fleet": st.fixed_dictionaries({}, optional={
        "pool": IDENT, "retries": st.integers(0, 10), "batch_size": st.integers(1, 100),
        "tier_priority": st.dictionaries(st.integers(0, 5), st.integers(1, 10), max_size=3)}),
    "notifications": st.fixed_dictionaries({}, optional={
        "email_to": st.lists(st.emails(), max_size=2),
        "events": st.lists(st.sampled_from(["approval", "escalation", "rollback", "finished"]),
                           unique=True)}),
}).map(_distinct_datasets)

# -- hostile values -------------------------------------------------------------------

ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co", "Cs"]), max_size=20),
    st.sampled_from(["", " ", "\t", "-", "--x", "x-", "A", "\u202ex", "\ufeff", "é", "ß" * 70,
                     "a" * 65, "'; DROP TABLE x; --", "{{ ref('x') }}", "${HOME}", "%s%n",
                     "a.b.c.d", ".a", "a..b", "1a.b", "🎉.🎉", "\\x00", "~", "null", "yes"]),
    st.integers(0, 5).map(lambda k: "x" * 10 ** k),  # up to 100,000 characters
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    ODD_TEXT, st.binary(max_size=20), st.dates(), st.datetimes())
HOSTILE_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(ODD_TEXT, st.integers()), inner,
                                                 max_size=4)), max_leaves=12)
FIELDS = ["campaign", "title", "description", "owners", "warehouse", "dialect", "source",
          "target", "columns", "forward", "consumers", "rollout", "agents", "simulation", "fleet",
          "notifications", "waves", "share", "name", "repo", "schedule", "llm", "attempts"]


def _paths(value, prefix=(), seen=None):
    """Every (path, value) inside a nested document, the root included; each container once
    (documents may be recursive) and at most 20 levels down."""
    seen = set() if seen is None else seen
    yield prefix, value
    if id(value) in seen or len(prefix) > 20:
        return
    if isinstance(value, (dict, list)):
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in list(items):
            yield from _paths(v, (*prefix, k), seen)


def _set(doc, path, value):
    if not path:
        return value
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


@st.composite
def damaged_documents(draw):
    """A valid campaign with a few edits: values replaced, fields dropped or added, values
    shared (YAML anchors) or made recursive."""
    doc = draw(VALID)
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(doc))[1:] or [((), doc)]  # the root itself: see campaign_files' noise
        path, value = paths[draw(st.integers(0, len(paths) - 1))]
        action = draw(st.sampled_from(["replace", "drop", "add", "share", "recurse", "nest"]))
        if action == "replace":
            doc = _set(doc, path, draw(HOSTILE_VALUES))
        elif action == "drop" and path:
            parent = doc
            for part in path[:-1]:
                parent = parent[part]
            del parent[path[-1]]
        elif action == "add" and isinstance(value, dict):
            value[draw(st.one_of(st.sampled_from(FIELDS), ODD_TEXT))] = draw(HOSTILE_VALUES)
        elif action == "share" and path:
            other_path, other = paths[draw(st.integers(0, len(paths) - 1))]
            if other is not value and not any(p is value for _, p in _paths(other, seen=set())):
                doc = _set(doc, path, other)  # the same object twice: an anchor and an alias
        elif action == "recurse" and isinstance(value, (dict, list)):
            if isinstance(value, dict):
                value[draw(st.sampled_from(FIELDS))] = value
            else:
                value.append(value)
        elif action == "nest":
            depth = draw(st.sampled_from([10, 63, 64, 65, 150]))  # deeper: see DEEP below
            inner = value
            for _ in range(depth):
                inner = [inner]
            doc = _set(doc, path, inner)
    return doc


def _dump(doc, flow: bool, unicode: bool) -> str:
    try:
        return yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=unicode, sort_keys=False,
                              width=60 if flow else 10**6)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError):
        return "campaign: not-representable\n"


TEXT_EDITS = st.sampled_from(["insert", "delete", "truncate", "crlf", "tabs", "bom", "dup_line",
                              "merge", "nul", "latin1"])


@st.composite
def damaged_bytes(draw, text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(TEXT_EDITS)
        at = draw(st.integers(0, len(data)))
        if edit == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif edit == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 20)):]
        elif edit == "truncate":
            data = data[:at]
        elif edit == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif edit == "tabs":
            data = data.replace(b"  ", b"\t")
        elif edit == "bom":
            data = b"\xef\xbb\xbf" + data
        elif edit == "dup_line":
            lines = data.split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            data = b"\n".join(lines[:i + 1] + lines[i:])
        elif edit == "merge":
            data = b"base: &base {title: t, owners: [a]}\n" + data + b"\n<<: *base\n"
        elif edit == "nul":
            data = data[:at] + b"\x00" + data[at:]
        elif edit == "latin1":
            data = data.replace("é".encode(), b"\xe9") + "\ncountry: Köln\n".encode("latin-1")
    return data


# Nesting deeper than a Python dumper can write: flow and block style, some past libyaml's
# own limit of 1,000 levels.
DEEP = st.builds(lambda n, flow: (b"a: " + b"[" * n + b"]" * n) if flow else
                 b"".join(b"  " * i + b"k:\n" for i in range(n)) + b"  " * n + b"v\n",
                 st.sampled_from([63, 64, 65, 200, 999, 1001, 5000]), st.booleans())


@st.composite
def campaign_files(draw) -> bytes:
    kind = draw(st.sampled_from(["valid", "damaged", "damaged", "damaged", "damaged", "noise"]))
    if kind == "noise":
        return draw(st.one_of(st.binary(max_size=200), DEEP,
                              st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
    doc = draw(VALID if kind == "valid" else damaged_documents())
    text = _dump(doc, draw(st.booleans()), draw(st.booleans()))
    return draw(damaged_bytes(text)) if kind == "damaged" else text.encode("utf-8", "surrogatepass")


# -- the property ---------------------------------------------------------------------

def _assert_skein_errors(exc: SpecErrors, path: Path, data: bytes) -> None:
    assert exc.errors, "SpecErrors without errors"
    # YAML's line breaks: CR, LF, CRLF, NEL, LS, PS (a file an editor shows on one line may not be)
    last_line = len(re.split("\r\n|[\r\n\x85\u2028\u2029]", data.decode("utf-8", "replace")))
    for error in exc.errors:
        assert isinstance(error, SpecError)
        assert error.file in (str(path), str(path.resolve())), error.render()
        assert isinstance(error.line, int) and 1 <= error.line <= last_line, error.render()
        assert error.message.strip(), error.render()
        assert error.render().startswith(f"{error.file}:{error.line}: "), error.render()
        assert len(error.render().splitlines()) == 1, error.render()  # one line per problem


def _kind(message: str) -> str:
    """A short class of an error message, for the run's statistics."""
    return re.split(r"[:'\"(0-9]", message, maxsplit=1)[0].strip()[:40]


def check_campaign_file(tmp: Path, data: bytes) -> None:
    path = tmp / "campaign.yaml"
    path.write_bytes(data)
    try:
        campaign = load_campaign(path)
    except SpecErrors as exc:
        _assert_skein_errors(exc, path, data)
        valid = False
        event("skein error: " + _kind(exc.errors[0].message))
    else:
        assert isinstance(campaign, Campaign)
        assert campaign.path == path.resolve()
        valid = True
        event("valid campaign")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", str(path), "--offline"])
    # validate also checks the repository globs (offline too): a generated one may match none
    usable = valid and not repository_problems(campaign)
    assert code == (0 if usable else 2), (code, err.getvalue()[:2000])
    assert "Traceback" not in err.getvalue()
    if not usable:
        assert err.getvalue().startswith(f"skein: {path}"), err.getvalue()[:500]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """Where generated files are written; the repositories the generated globs name exist
    (``skein validate`` checks them, offline too)."""
    import subprocess

    root = tmp_path_factory.mktemp("campaign-files")
    for repo in ("repos/x", "r", "a/b/y"):
        subprocess.run(["git", "init", "-q", str(root / repo)], check=True)
    return root


@given(campaign_files())
@example(b"campaign: a\xff\n")  # not UTF-8
@example(b"a: &x [*x]\n")  # an anchor inside itself
@example(b"? [a, b]\n: 1\n")  # a key that is a list
@example(b"a: " + b"[" * 500 + b"]" * 500 + b"\n")  # deep, but under libyaml's own limit
@example(b"campaign: x\n\x00\n")  # a control character
@example(b"[")  # libyaml's mark is one line past the end of the file
@example(b'campaign: x\n"a\\nb": 1\n')  # a key with a line break: one error, one line
@example(b"base: &b {a: 1}\nk:\n  <<: *b\n  <<: *b\n")  # merge keys, repeated
def test_any_campaign_file_is_a_spec_or_a_skein_error(scratch, data):
    check_campaign_file(scratch, data)


def test_generated_valid_campaigns_load():
    """The generator's valid documents are valid: the property is not all error paths."""
    from hypothesis import find, settings

    found = find(VALID, lambda d: isinstance(_load_text(yaml.safe_dump(d)), Campaign),
                 settings=settings(max_examples=200, database=None, derandomize=True))
    assert found


def _load_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text)
        try:
            return load_campaign(path)
        except SpecErrors as exc:
            return exc

