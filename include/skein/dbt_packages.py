"""A project's ``packages.yml`` packages, when they are not installed (the normal case: ``dbt
deps`` needs the dbt hub or git, unreachable here and in locked-down CI).

dbt refuses to parse a project whose packages.yml lists packages that ``dbt_packages/`` lacks,
and a model or YAML test calling ``dbt_utils.x`` needs a macro of that name to parse. So, in
the sandbox copy only: packages.yml (and dependencies.yml) are removed, a ``local:`` package
inside the project is copied in, and every other package gets a stand-in that defines each
macro name the project calls (``pkg.name``) as a macro and as a generic test. A stand-in
renders nothing while dbt parses (``execute`` is false there, so refs in its arguments are
still recorded) and raises a compilation error naming the package when dbt compiles: that
model is then reported as not compiled, with that reason, instead of compiling to wrong SQL.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from skein.errors import SpecError
from skein.yamlspan import check_expansion

PACKAGE_FILES = ("packages.yml", "dependencies.yml")


@dataclass(frozen=True)
class StandIn:
    package: str
    macros: tuple[str, ...]
    origin: str  # what packages.yml said: "dbt-labs/dbt_utils 1.3.2", "local: sub"


def package_name(entry: dict) -> str | None:
    """The dbt project name a packages.yml entry installs (hub and git: the last part).

    >>> package_name({"package": "dbt-labs/dbt_utils", "version": "1.3.2"})
    'dbt_utils'
    >>> package_name({"git": "https://github.com/dbt-labs/dbt-utils.git", "revision": "1.0"})
    'dbt_utils'
    >>> package_name({"tarball": "x"}) is None
    True
    """
    spec = entry.get("package") or entry.get("git")
    if not isinstance(spec, str):
        return None
    last = spec.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"\.git$", "", last).replace("-", "_") or None


def declared_packages(project: Path) -> list[dict]:
    """The entries of packages.yml and dependencies.yml (unreadable files: none)."""
    entries: list[dict] = []
    for name in PACKAGE_FILES:
        path = project / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            check_expansion(text, path.name)  # an alias bomb is refused before it is built
            doc = yaml.safe_load(text) or {}
        except (yaml.YAMLError, SpecError, UnicodeDecodeError):
            continue  # dbt would refuse it too; without it the project may still parse
        packages = doc.get("packages") if isinstance(doc, dict) else None
        entries.extend(e for e in (packages if isinstance(packages, list) else [])
                       if isinstance(e, dict))
    return entries


def macros_called(project: Path, package: str) -> tuple[str, ...]:
    """Names used as ``package.name`` in the project's SQL and YAML.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()); (root / "models").mkdir()
    >>> _ = (root / "models" / "m.sql").write_text("{{ dbt_utils.star(ref('a')) }}")
    >>> _ = (root / "models" / "m.yml").write_text("tests: [dbt_utils.accepted_range: {}]")
    >>> macros_called(root, "dbt_utils")
    ('accepted_range', 'star')
    """
    pattern = re.compile(rf"\b{re.escape(package)}\.([A-Za-z_]\w*)")
    names: set[str] = set()
    for path in project.rglob("*"):
        if path.suffix in (".sql", ".yml", ".yaml", ".md") and path.is_file():
            names.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return tuple(sorted(names))


def stand_in_macros(package: str, names: tuple[str, ...]) -> str:
    """Macro file of a stand-in package. Jinja lets a macro take any arguments when its body
    mentions ``varargs`` and ``kwargs``.

    >>> text = stand_in_macros("dbt_utils", ("star",))
    >>> "{% macro star()" in text and "{% test star(model)" in text
    True
    """
    reason = f"package {package} is not installed (packages.yml; dbt deps needs the network)"
    out = []
    for name in names:
        fail = (f"{{%- set _ = (varargs, kwargs) -%}}{{%- if execute -%}}{{{{ exceptions."
                f"raise_compiler_error('{package}.{name}: {reason}') }}}}{{%- endif -%}}")
        out.append(f"{{% macro {name}() %}}{fail}{{% endmacro %}}")
        if not name.startswith("test_"):
            out.append(f"{{% test {name}(model) %}}{fail}select 1 where false{{% endtest %}}")
    return "\n".join(out) + "\n"


def install_stand_ins(copy: Path, packages_dir: str = "dbt_packages") -> list[StandIn]:
    """Replace the copy's declared packages as described above; what was put in their place."""
    done: list[StandIn] = []
    for entry in declared_packages(copy):
        local = entry.get("local")
        if isinstance(local, str) and _inside(copy, copy / local):
            name = _local_name(copy / local)
            if name:
                shutil.copytree(copy / local, copy / packages_dir / name, symlinks=True,
                                dirs_exist_ok=True)
                done.append(StandIn(name, (), f"local: {local}"))
            continue
        name = package_name(entry)
        if not name:
            continue
        names = macros_called(copy, name)
        folder = copy / packages_dir / name
        (folder / "macros").mkdir(parents=True, exist_ok=True)
        (folder / "dbt_project.yml").write_text(
            yaml.safe_dump({"name": name, "version": "0.0.0", "config-version": 2,
                            "macro-paths": ["macros"]}), encoding="utf-8")
        (folder / "macros" / "skein_stand_in.sql").write_text(stand_in_macros(name, names),
                                                              encoding="utf-8")
        origin = f"{entry.get('package') or entry.get('git')} {entry.get('version') or entry.get('revision') or ''}"
        done.append(StandIn(name, names, origin.strip()))
    for name in PACKAGE_FILES + ("package-lock.yml",):
        (copy / name).unlink(missing_ok=True)
    return done


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return path.is_dir()


def _local_name(folder: Path) -> str | None:
    try:
        text = (folder / "dbt_project.yml").read_text(encoding="utf-8")
        check_expansion(text, "dbt_project.yml")
        doc = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError, SpecError, UnicodeDecodeError):
        return None
    return str(doc.get("name")) if isinstance(doc, dict) and doc.get("name") else None
