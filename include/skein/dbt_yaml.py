"""A dbt project's YAML (dbt_project.yml, profiles.yml, sources files), read as untrusted.

Every file goes through ``skein.yamlspan`` with the consumer limits (size, values, expanded
text), and every field Skein uses is checked for its type, so a malformed file is one
``DbtProjectError`` naming the file, line and field; discovery escalates the project's
consumers with it instead of stopping the campaign. Folder settings must stay inside the
project (``model-paths: [/]`` would read the whole machine).

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "dbt_project.yml").write_text("name: m\\nmodel-paths: models\\n")
>>> read_project_config(root)
Traceback (most recent call last):
skein.errors.DbtProjectError: .../dbt_project.yml:2: model-paths: expected a list of folders, got a string
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from skein.errors import DbtProjectError, SpecError
from skein.paths import symlink_on_path
from skein.yamlspan import CONSUMER_LIMITS, YamlDoc, load_yaml_file, shorten

_TYPE_NAMES = {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing",
               bool: "a boolean", int: "a number", float: "a number"}


@dataclass
class ProjectConfig:
    name: str
    profile: str | None
    model_paths: list[str]
    macro_paths: list[str]
    vars: dict[str, Any]
    models: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict)


def load(path: Path) -> YamlDoc:
    """One document of a consumer's YAML file, or ``DbtProjectError``."""
    try:
        return load_yaml_file(path, strict=False, limits=CONSUMER_LIMITS)
    except SpecError as exc:
        raise DbtProjectError(str(exc)) from None


def _problem(doc: YamlDoc, path: tuple, message: str) -> DbtProjectError:
    name = ".".join(shorten(str(p), 40) for p in path)
    return DbtProjectError(str(SpecError(message, file=doc.file, line=doc.line_of(path) or 1,
                                         field=name or None)))


def expect(doc: YamlDoc, value: Any, path: tuple, kinds: tuple[type, ...], what: str) -> Any:
    """``value`` if it is one of ``kinds``, else the error naming its line and field."""
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    got = _TYPE_NAMES.get(type(value), type(value).__name__)
    raise _problem(doc, path, f"expected {what}, got {got}")


def _folders(doc: YamlDoc, value: Any, key: str, default: list[str]) -> list[str]:
    if value is None:
        return default
    folders = expect(doc, value, (key,), (list,), "a list of folders")
    for index, folder in enumerate(folders):
        expect(doc, folder, (key, index), (str,), "a folder name")
        pure = PurePosixPath(folder)
        if not folder or pure.is_absolute() or ".." in pure.parts or len(folder) > 255:
            raise _problem(doc, (key, index), f"{shorten(folder)!r} is not a folder inside "
                                              "the project")
    return [str(PurePosixPath(f)) for f in folders]


def read_project_config(root: Path) -> ProjectConfig:
    """dbt_project.yml, the fields Skein uses, checked."""
    doc = load(root / "dbt_project.yml")
    if doc.data is None:
        raise _problem(doc, (), "the file is empty; a dbt project names itself with `name`")
    data = expect(doc, doc.data, (), (dict,), "a mapping of settings")
    name = expect(doc, data.get("name", root.name), ("name",), (str,), "a project name")
    profile = expect(doc, data.get("profile"), ("profile",), (str, type(None)), "a profile name")
    paths_key = "model-paths" if "model-paths" in data else "source-paths"
    return ProjectConfig(
        name=name, profile=profile,
        model_paths=_folders(doc, data.get(paths_key), paths_key, ["models"]),
        macro_paths=_folders(doc, data.get("macro-paths"), "macro-paths", ["macros"]),
        vars=expect(doc, data.get("vars") or {}, ("vars",), (dict,), "a mapping of names"),
        models=expect(doc, data.get("models") or {}, ("models",), (dict,), "a mapping"),
        raw=data)


def target_schema(root: Path, profile: str | None) -> str:
    """The target's ``schema`` from a profiles.yml next to the project, else ``main``."""
    path = root / "profiles.yml"
    if not path.is_file() or symlink_on_path(root, "profiles.yml"):
        return "main"
    doc = load(path)
    if doc.data is None:
        raise _problem(doc, (), "the file is empty: remove it, or name the project's profile")
    profiles = expect(doc, doc.data, (), (dict,), "a mapping of profiles")
    key = profile if profile in profiles else next(iter(profiles), None) if not profile else None
    if key is None:
        return "main"
    entry = expect(doc, profiles[key], (key,), (dict,), "a profile (target, outputs)")
    target = expect(doc, entry.get("target", "dev"), (key, "target"), (str,), "a target name")
    outputs = expect(doc, entry.get("outputs") or {}, (key, "outputs"), (dict,), "a mapping of targets")
    output = expect(doc, outputs.get(target) or {}, (key, "outputs", target), (dict,), "a target")
    schema = expect(doc, output.get("schema", "main"), (key, "outputs", target, "schema"),
                    (str, int), "a schema name")
    return str(schema).lower()


def read_sources(path: Path, sources: dict[tuple[str, str], str]) -> None:
    """Add the ``sources:`` a schema file declares (``(source, table) -> schema.table``)."""
    doc = load(path)
    data = expect(doc, doc.data or {}, (), (dict,), "a mapping (sources:, models:, ...)")
    entries = expect(doc, data.get("sources") or [], ("sources",), (list,), "a list of sources")
    for i, src in enumerate(entries):
        src = expect(doc, src, ("sources", i), (dict,), "a source (name, tables)")
        name = expect(doc, src.get("name"), ("sources", i, "name"), (str,), "a source name")
        schema = expect(doc, src.get("schema") or name, ("sources", i, "schema"), (str,), "a schema name")
        tables = expect(doc, src.get("tables") or [], ("sources", i, "tables"), (list,), "a list of tables")
        for j, table in enumerate(tables):
            where = ("sources", i, "tables", j)
            table = expect(doc, table, where, (dict,), "a table (name, identifier)")
            table_name = expect(doc, table.get("name"), (*where, "name"), (str,), "a table name")
            identifier = expect(doc, table.get("identifier") or table_name,
                                (*where, "identifier"), (str,), "a table name")
            sources[(name, table_name)] = f"{schema}.{identifier}".lower()


def project_files(root: Path, folders: list[str], patterns: tuple[str, ...]) -> list[Path]:
    """The project's files under ``folders`` matching ``patterns``, sorted; files reached
    through a symlink are left out (they may lead anywhere on the machine)."""
    files: list[Path] = []
    for folder in folders:
        try:
            if symlink_on_path(root, folder) or not (root / folder).is_dir():
                continue
            for pattern in patterns:
                files.extend(p for p in sorted((root / folder).rglob(pattern))
                             if p.is_file() and not symlink_on_path(root, str(p.relative_to(root))))
        except OSError as exc:  # a name the file system refuses, a folder that cannot be listed
            raise DbtProjectError(f"{root / folder[:100]}: cannot read: {exc.strerror}") from None
    return files
