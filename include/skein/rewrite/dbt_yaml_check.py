"""The scope check for dbt YAML patches, and what a dropped column escalates.

``check_yaml_patch`` proves a ``YamlPatch`` (``skein.rewrite.dbt_yaml``) changed nothing but
what it meant to: the new text is the original with exactly the patch's edits spliced in
(every other byte identical), it parses, and parsed old and new differ at exactly the
patch's expected paths, with the expected values.

>>> from skein.rewrite.dbt_yaml import Owner, rename_columns
>>> patch = rename_columns("seeds:\\n  - name: s\\n    columns:\\n      - name: a\\n", "s.yml",
...                        Owner("seed", "s"), {"a": "b"})
>>> check_yaml_patch(patch, patch.text, "s.yml")
[]
>>> check_yaml_patch(patch, patch.text.replace("seeds", "models"), "s.yml")[0]
's.yml: bytes outside the edited spans changed (first at offset 0)'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from skein.rewrite.dbt_yaml import (MISSING, Owner, YamlPatch, child, column_entries, compose,
                                    items, matches, same, scalar, semantic_parts)
from skein.errors import SkeinError
from skein.rewrite.edits import apply_edits, normalize

TESTS = ("data_tests", "tests")


def check_yaml_patch(patch: YamlPatch, new_text: str, file: str) -> list[str]:
    """The problems found (empty: the patch is in scope)."""
    expected_text = apply_edits(patch.original, normalize(patch.edits))
    if new_text != expected_text:
        first = next((i for i, (a, b) in enumerate(zip(new_text, expected_text)) if a != b),
                     min(len(new_text), len(expected_text)))
        return [f"{file}: bytes outside the edited spans changed (first at offset {first})"]
    try:
        old, new = plain(patch.original), plain(new_text)
    except YAMLError as exc:
        return [f"{file}: the patched YAML does not parse: {str(exc).splitlines()[0]}"]
    found = differences(old, new)
    problems = []
    for path, (before, after) in sorted(found.items(), key=repr):
        want = patch.expected.get(path)
        if want is None:
            problems.append(f"{file}: {'.'.join(map(str, path))} changed, not by the campaign")
        elif want != (before, after):
            problems.append(f"{file}: {'.'.join(map(str, path))} is {after!r}, expected {want[1]!r}")
    problems += [f"{file}: {'.'.join(map(str, p))} did not change" for p in patch.expected
                 if p not in found]
    return problems


class YamlEditRefused(SkeinError):
    """A YAML patch that would change more (or other) than it meant to: never written."""


def verified(patch: YamlPatch, file: str) -> YamlPatch:
    """``patch`` when ``check_yaml_patch`` finds nothing, else ``YamlEditRefused`` naming
    every problem (an anchor shared by two entries, for one: editing it edits both)."""
    problems = check_yaml_patch(patch, patch.text, file)
    if problems:
        raise YamlEditRefused("; ".join(problems))
    return patch


def plain(text: str):
    """The round-trip parse as plain dicts, lists and scalars."""
    def convert(value):
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value if value is None or isinstance(value, (bool, int, float)) else str(value)

    return convert(YAML(typ="rt").load(text))


def differences(old, new, path: tuple = ()) -> dict[tuple, tuple]:
    """Paths where ``old`` and ``new`` differ: a leaf's (old, new); a key or item only one
    side has: (MISSING, value) or (value, MISSING).

    >>> differences({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}, 4]})
    {('a', 1, 'b'): (2, 3), ('a', 2): ('<missing>', 4)}
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: dict[tuple, tuple] = {}
        for key in [*old, *(k for k in new if k not in old)]:
            out.update(differences(old.get(key, MISSING), new.get(key, MISSING), (*path, key)))
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = {}
        for i in range(max(len(old), len(new))):
            out.update(differences(old[i] if i < len(old) else MISSING,
                                   new[i] if i < len(new) else MISSING, (*path, i)))
        return out
    return {} if old == new else {path: (old, new)}


@dataclass(frozen=True)
class YamlNeed:
    """Something in the YAML that needs a dropped column: escalated, never edited."""

    file: str
    line: int
    what: str
    part: str | None = None  # semantic models: entities | dimensions | measures
    name: str | None = None  # ... and the part's name, which metrics use

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


def dropped_column_needs(text: str, file: str, owner: Owner, dropped: set[str]) -> list[YamlNeed]:
    """The tests, contracts and semantic-model parts of ``owner`` that name a dropped column.

    >>> text = "models:\\n  - name: o\\n    columns:\\n      - name: tip\\n        data_tests: [not_null]\\n"
    >>> [str(n) for n in dropped_column_needs(text, "m.yml", Owner("model", "o"), {"tip"})]
    ["m.yml:5: column tip is dropped but test 'not_null' needs it"]
    """
    root = compose(text, file)
    needs = []
    for node, _ in column_entries(root, owner):
        name = scalar(child(node, "name")[0])
        if not any(same(name, d) for d in dropped):
            continue
        for key in TESTS:
            for test in items(child(node, key)[0]):
                needs.append(YamlNeed(file, test.start_mark.line + 1,
                                      f"column {name} is dropped but test '{generic_test_name(test)}' needs it"))
        for key in ("data_type", "constraints"):
            declared = child(node, key)[0]
            if declared is not None:
                needs.append(YamlNeed(file, declared.start_mark.line + 1,
                                      f"column {name} is dropped but its contract ({key}) needs it"))
    for node, _, part in semantic_parts(root, owner):
        expr, name = child(node, "expr")[0], scalar(child(node, "name")[0])
        for column in dropped:
            if (expr is not None and matches(scalar(expr) or "", column)) or (expr is None and same(name, column)):
                needs.append(YamlNeed(file, node.start_mark.line + 1,
                                      f"column {column} is dropped but {part} '{name}' needs it",
                                      part, name))
    return needs


def generic_test_name(test: Node) -> str:
    """``not_null`` or ``{relationships: {...}}``: the generic test's name."""
    if isinstance(test, MappingNode) and test.value:
        return scalar(test.value[0][0]) or "?"
    return scalar(test) or "?"


DIMENSION_CALL = re.compile(r"\b(?:Dimension|TimeDimension|Entity)\(\s*['\"]([\w]+)['\"]")


def metrics_needing(text: str, file: str, needs: list[YamlNeed]) -> list[YamlNeed]:
    """The metrics of a ``metrics:`` file that use a measure, dimension or entity ``needs``
    names (``dropped_column_needs``), directly, in a ``filter:``, or through another metric
    (ratio, derived): each escalates with its line.

    >>> needs = [YamlNeed("t.yml", 3, "...", "measures", "tips")]
    >>> text = "metrics:\\n  - name: tip_rate\\n    type: ratio\\n    type_params:\\n      numerator: tip_total\\n      denominator: orders\\n  - name: tip_total\\n    type_params:\\n      measure: tips\\n"
    >>> [str(n) for n in metrics_needing(text, "m.yml", needs)]
    ["m.yml:5: metric 'tip_rate' needs metric 'tip_total'", "m.yml:9: metric 'tip_total' needs measure 'tips'"]
    """
    measures = {n.name for n in needs if n.part == "measures"}
    dimensions = {n.name for n in needs if n.part in ("dimensions", "entities")}
    metrics = items(child(compose(text, file), "metrics")[0])
    found: dict[str, YamlNeed] = {}
    while True:  # a metric built on one that needs the column needs it too
        before = len(found)
        for metric in metrics:
            name = scalar(child(metric, "name")[0])
            if name is not None and name not in found:
                hit = metric_need(metric, measures, dimensions, set(found))
                if hit is not None:
                    line, why = hit
                    found[name] = YamlNeed(file, line, f"metric '{name}' needs {why}")
        if len(found) == before:
            return sorted(found.values(), key=lambda n: n.line)


def metric_need(metric: Node, measures: set[str], dimensions: set[str],
                metrics: set[str]) -> tuple[int, str] | None:
    """(line, what) of the first reference in ``metric`` to one of the names given."""
    for keys, node in scalars(metric):
        value, line = node.value, node.start_mark.line + 1
        last, above = keys[-1], set(keys[:-1])
        if (last == "measure" or (last == "name" and "measure" in above)) and value in measures:
            return line, f"measure '{value}'"
        if (last in ("numerator", "denominator") or (last == "name" and above & {
                "numerator", "denominator", "metrics"})) and value in metrics:
            return line, f"metric '{value}'"
        if last in ("filter", "where", "expr"):
            for call in DIMENSION_CALL.finditer(value):
                if call.group(1).split("__")[-1] in dimensions:
                    return line, f"dimension '{call.group(1)}' in its {last}"
    return None


def scalars(node: Node, keys: tuple = ()):
    """(the keys above, scalar node) of every scalar under ``node``, in order."""
    if isinstance(node, MappingNode):
        for k, v in node.value:
            yield from scalars(v, (*keys, scalar(k)))
    elif isinstance(node, SequenceNode):
        for v in node.value:
            yield from scalars(v, keys)
    elif isinstance(node, ScalarNode) and keys:
        yield keys, node
