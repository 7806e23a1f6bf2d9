"""Property: a consumer repository's dbt Jinja and YAML run no code and stay bounded.

Generated dbt Jinja (attribute walks towards Python's globals, operations that would build
gigabytes or compute for hours, recursive macros, random and truncated Jinja syntax) is
rendered through ``skein.dbt`` (the sandbox, in the project's renderer process), in a model
and in a macro file; generated YAML (alias bombs, long anchors repeated, deep nesting, wrong
types at random places, damaged bytes) is read as a dbt project's files by
``load_dbt_project`` and as ``catalog-info.yaml`` by ``OwnershipResolver``. Every outcome is a
result or a ``SkeinError`` (``DbtRenderError``, ``DbtProjectError``, an ownership problem),
never another exception; no payload's command ever runs (a marker file never appears); the
results are small and this process's peak memory does not grow by more than 500 MB.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from skein.dbt import DbtRenderError, load_dbt_project
from skein.errors import SkeinError
from skein.ownership import OwnershipResolver

BASE = Path("/tmp") / f"skein-property-jinja-{os.getpid()}"  # the marker's path is generated
MARKER = BASE / "pwned"
MODEL = "select user_id from {{ source('analytics', 'plays') }}\n"
PROJECT = {"dbt_project.yml": "name: shop\nprofile: shop\nvars: {n: 3}\n",
           "profiles.yml": "shop: {target: dev, outputs: {dev: {schema: dbt}}}\n",
           "models/sources.yml": "sources: [{name: analytics, tables: [{name: plays}]}]\n",
           "models/a.sql": MODEL}


def peak_kb() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())[1])


START_KB = [peak_kb()]


@pytest.fixture(scope="module", autouse=True)
def fresh_peak():
    """This module's own peak: earlier tests in the same worker may have grown it (writing 5
    to clear_refs resets the peak to the current size)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    START_KB[0] = peak_kb()


def write_project(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return root


@pytest.fixture(scope="module")
def project():
    """One project, one renderer process for every generated model (as discovery renders)."""
    import skein.jinja_process

    saved = skein.jinja_process.RENDER_SECONDS
    skein.jinja_process.RENDER_SECONDS = 1  # generated loops may run long: 1 s, not 10
    loaded = load_dbt_project(write_project(BASE / "shared", PROJECT))
    yield loaded
    loaded.close()
    skein.jinja_process.RENDER_SECONDS = saved
    shutil.rmtree(BASE, ignore_errors=True)


def bounded() -> None:
    assert not MARKER.exists(), "a payload's command ran"
    assert peak_kb() - START_KB[0] < 500 * 1024


# -- Jinja payloads ---------------------------------------------------------------------

COMMAND = f"'id > {MARKER}'"
ROOTS = ("cycler", "joiner", "namespace", "lipsum", "range", "dict", "self", "ref", "source",
         "config", "var", "target", "this", "''", "()", "[]", "{}", "undefined_name", "1",
         "ref('a')", "loop", "caller", "varargs", "kwargs", "env_var")
STEPS = ("__class__", "__init__", "__globals__", "__builtins__", "__subclasses__()", "__mro__",
         "__base__", "mro()", "os", f"system({COMMAND})", f"popen({COMMAND}).read()",
         "['os']", "['__builtins__']", "['__import__']('os')", "__import__('os')",
         "func_globals", "gi_frame", "f_globals", "_TemplateReference__context", "environment",
         "__self__", "__func__", "items()", "keys()", "upper()", "__getattribute__('__class__')",
         "format", f"format({COMMAND})", "eval", f"eval({COMMAND})", "module", "__dict__")
SIZES = (0, 1, 3, 1000, 10 ** 6, 10 ** 7, 10 ** 9, 10 ** 18, -1)


@st.composite
def attribute_walk(draw) -> str:
    steps = draw(st.lists(st.sampled_from(STEPS), min_size=1, max_size=6))
    text = draw(st.sampled_from(ROOTS))
    for step in steps:
        text += step if step.startswith("[") else "." + step
    return "{{ " + text + " }}"


@st.composite
def big_operation(draw) -> str:
    n, m = draw(st.sampled_from(SIZES)), draw(st.sampled_from(SIZES[:6]))
    return draw(st.sampled_from([
        f"{{{{ 'x' * {n} }}}}", f"{{{{ [0] * {n} }}}}", f"{{{{ {n} * 'ab' }}}}",
        f"{{{{ {m} ** {n} }}}}", f"{{{{ 10 ** (10 ** {m}) }}}}", f"{{{{ range({n}) | list | length }}}}",
        f"{{{{ 'x'.ljust({n}) }}}}", f"{{{{ 'x'.center({n}) }}}}", f"{{{{ 'a\\tb'.expandtabs({n}) }}}}",
        f"{{{{ 'x' | center({n}) }}}}", f"{{{{ 'a\\nb' | indent({n}) }}}}",
        f"{{{{ range({min(n, 10 ** 5)}) | join('y' * {m}) }}}}", f"{{{{ '%0{n}d' % 1 }}}}",
        f"{{{{ '{{:>{n}}}'.format(1) }}}}", f"{{{{ 'ab'.replace('', 'x' * {m}) }}}}",
        f"{{{{ ('x' * {m}) ~ ('y' * {m}) }}}}", f"{{{{ {n} * {n} * {n} * {n} }}}}",
        "{% set ns = namespace(s='x') %}{% for i in range(" + str(min(abs(n), 40)) + ") %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "{% for i in range(" + str(min(abs(n), 10 ** 5)) + ") %}{% for j in range(" +
        str(min(m, 10 ** 5)) + ") %}{% endfor %}{% endfor %}",
    ]))


@st.composite
def recursion(draw) -> str:
    depth = draw(st.sampled_from([1, 10, 100, 10 ** 6]))
    return ("{% macro r(n) %}{% if n > 0 %}{{ r(n - 1) }}{% endif %}{% endmacro %}"
            f"{{{{ r({depth}) }}}}" if draw(st.booleans()) else
            "{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}")


JINJA_TOKENS = ("{{", "}}", "{%", "%}", "{#", "#}", " if ", " for ", " in ", " endif ", " endfor ",
                " macro ", " endmacro ", " set ", " call ", " filter ", " raw ", " endraw ", "|",
                "(", ")", "[", "]", ".", ",", "'", '"', "~", "*", "**", "x", "ref", "source",
                "config", "var", "1", "range", "\n", " ", "-", "+", "=", "==", "not", "loop")


@st.composite
def random_syntax(draw) -> str:
    pieces = draw(st.lists(st.sampled_from(JINJA_TOKENS), max_size=40))
    text = "".join(pieces)
    if draw(st.booleans()):
        text += draw(st.text(max_size=30))
    return text


PAYLOADS = st.one_of(attribute_walk(), big_operation(), recursion(), random_syntax())
FRAGMENTS = st.lists(PAYLOADS, min_size=1, max_size=3).map("\n".join)


@given(fragment=FRAGMENTS)
@example(fragment="{{ cycler.__init__.__globals__.os.system(" + COMMAND + ") }}")
@example(fragment="{{ 1/0 }}")
@example(fragment="{{ 'x' * 10**9 }}")
@example(fragment="{{ range(10**9) | list }}")
@example(fragment="{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}")
def test_generated_model_jinja_renders_or_is_a_render_error(project, fragment):
    path = project.root / "models" / "a.sql"
    try:
        rendered = project.render(path, MODEL + fragment)
    except DbtRenderError as exc:
        assert 0 < len(str(exc)) < 2000 and "\n" not in str(exc)
        event(f"refused: {outcome(str(exc))}")
    else:
        assert len(rendered.sql) <= 4 << 20 and rendered.relation == "dbt.a"
        event("rendered")
    bounded()


OUTCOMES = ("unsafe", "time limit", "memory limit", "recursion", "would build", "power of",
            "product of", "format width", "Range too big", "undefined", "has no attribute",
            "not declared", "unexpected", "expected", "Missing end", "Error")


def outcome(message: str) -> str:
    """The kind of refusal, for the statistics (``--hypothesis-show-statistics``)."""
    return next((kind for kind in OUTCOMES if kind in message), "other")


# Each example loads a project of its own, which starts its renderer process (~0.3 s): 100
# examples keep this property under a minute; the model property covers the payloads in bulk.
@settings(max_examples=100)
@given(fragment=FRAGMENTS)
@example(fragment="{{ cycler.__init__.__globals__.os.system(" + COMMAND + ") }}")
def test_generated_macro_files_load_or_are_a_render_error(tmp_path_factory, fragment):
    root = write_project(tmp_path_factory.mktemp("macros"),
                         {**PROJECT, "macros/m.sql": fragment,
                          "models/b.sql": "select 1 from {{ ref('a') }}\n"})
    project = load_dbt_project(root)
    try:
        for model in ("a", "b"):
            try:
                assert project.render(root / "models" / f"{model}.sql").sql
            except DbtRenderError as exc:
                assert 0 < len(str(exc)) < 2000 and "\n" not in str(exc)
    finally:
        project.close()
    bounded()


# -- YAML payloads ------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                    st.sampled_from(["shop", "models", "dbt", "[", "{", "*a", "&a", "<<"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


@st.composite
def alias_bomb(draw) -> str:
    levels, width = draw(st.integers(2, 12)), draw(st.integers(2, 10))
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\n{{key}}: *a{levels - 1}\n"


@st.composite
def long_anchor(draw) -> str:
    size, repeat = draw(st.sampled_from([10, 2000, 100_000])), draw(st.sampled_from([1, 100, 20_000]))
    return f"x: &x '{'y' * size}'\n{{key}}: [" + ", ".join(["*x"] * repeat) + "]\n"


@st.composite
def deep_nesting(draw) -> str:
    depth = draw(st.sampled_from([10, 63, 65, 500, 5000]))
    return "{key}: " + "[" * depth + "]" * depth + "\n"


@st.composite
def damaged(draw, base: str) -> str | bytes:
    data = base.encode("utf-8")
    kind = draw(st.sampled_from(["bytes", "bom", "latin1", "truncate", "noise"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind == "latin1":
        return data + b"# caf\xe9\n"
    if kind == "truncate":
        return data[:draw(st.integers(0, len(data)))]
    return draw(st.text(max_size=200))


FILES = ("dbt_project.yml", "profiles.yml", "models/sources.yml", "catalog-info.yaml")
KEYS = {"dbt_project.yml": ("name", "profile", "model-paths", "macro-paths", "vars", "models"),
        "profiles.yml": ("shop", "other"),
        "models/sources.yml": ("sources", "models", "version"),
        "catalog-info.yaml": ("kind", "metadata", "spec")}
VALID = {**{k: v for k, v in PROJECT.items() if k in FILES},
         "catalog-info.yaml": "kind: Component\nspec: {owner: team-shop}\n"}


@st.composite
def yaml_file(draw) -> tuple[str, str | bytes]:
    name = draw(st.sampled_from(FILES))
    key = draw(st.sampled_from(KEYS[name]))
    kind = draw(st.sampled_from(["typed", "bomb", "anchor", "deep", "damaged"]))
    if kind == "typed":  # a valid file with one value replaced by anything
        doc = yaml.safe_load(VALID[name]) or {}
        doc[key] = draw(VALUES)
        return name, yaml.safe_dump(doc)
    if kind == "damaged":
        return name, draw(damaged(VALID[name]))
    template = draw({"bomb": alias_bomb(), "anchor": long_anchor(), "deep": deep_nesting()}[kind])
    return name, template.replace("{key}", key)


@given(file=yaml_file())
@example(file=("catalog-info.yaml", "kind: Component\n" + "a0: &a0 [lol, lol, lol, lol, lol, lol, "
               "lol, lol, lol, lol]\n" + "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10)
                                                 + "]\n" for i in range(1, 9)) + "spec: *a8\n"))
@example(file=("dbt_project.yml", "name: shop\nmodel-paths: [/]\n"))
@example(file=("dbt_project.yml", "name: shop\nmodel-paths: ['" + "y" * 2000 + "']\n"))  # found
@example(file=("models/sources.yml", "sources: [{name: analytics, tables: 5}]\n"))
def test_generated_yaml_is_read_or_refused_with_skeins_error(tmp_path_factory, file):
    name, content = file
    root = write_project(tmp_path_factory.mktemp("yaml"), {**VALID, "models/a.sql": MODEL,
                                                           name: content})
    try:
        project = load_dbt_project(root, files=[])
    except SkeinError as exc:  # DbtProjectError: discovery escalates the project's consumers
        assert len(str(exc)) < 2000 and str(exc).startswith(str(root))
        event("dbt project refused: " + next((kind for kind in (
            "values", "MiB of text", "nested", "recursive", "invalid YAML", "UTF-8", "expected",
            "not a folder", "empty", "merge key", "mapping key") if kind in str(exc)), "other"))
    else:
        assert len(repr(project)) < 1 << 20
        project.close()
        event("dbt project read")
    owners = OwnershipResolver(root)
    ownership = owners.for_file(root / "models" / "a.sql")
    assert isinstance(ownership.owner, str) and len(ownership.owner) <= 200
    assert all(len(p) < 2000 and "\n" not in p for p in owners.problems)
    event("owner unknown, with a problem" if owners.problems else "owner read")
    bounded()
