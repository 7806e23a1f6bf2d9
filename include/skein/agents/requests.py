"""Turn a campaign and a catalog consumer into an agent's ``RewriteRequest``.

Only the datasets the consumer reads (plus source and target) go into the request:
resolution cost grows with the schema, and a request is self-contained evidence.
"""

from __future__ import annotations

from pathlib import Path

from skein.catalog import Catalog, Consumer
from skein.errors import SkeinError
from skein.rewrite.request import RewriteRequest
from skein.spec import Campaign


def target_schema(campaign: Campaign, schemas: dict[str, dict[str, str]]) -> dict[str, str]:
    """The target's columns: from the warehouse, else from the campaign's ``forward`` query."""
    target = campaign.target.lower()
    if target in schemas:
        return schemas[target]
    if campaign.forward:
        from skein.lineage import analyze_sql

        built = analyze_sql(campaign.forward, campaign.sql_dialect, schemas)
        return dict.fromkeys(built.outputs, "UNKNOWN")
    return {}


def request_for(campaign: Campaign, catalog: Catalog, consumer: Consumer) -> RewriteRequest:
    source, target = campaign.source.lower(), campaign.target.lower()
    # The consumer's own output too: dbt's {{ this }} (incremental blocks) reads it.
    wanted = set(consumer.lineage.reads) | {source} | ({consumer.output} if consumer.output else set())
    schemas = {name: columns for name, columns in catalog.schemas.items() if name in wanted}
    schemas[target] = target_schema(campaign, catalog.schemas)
    # The file's own line endings: patches and the hashes apply checks are of its bytes.
    text = _read_exact(consumer.file) if consumer.file else consumer.sql
    return RewriteRequest(
        consumer_id=consumer.id, text=text, dialect=consumer.dialect, source=source, target=target,
        columns=campaign.columns, columns_dialect=campaign.sql_dialect, schemas=schemas,
        default_schema=catalog.default_schema,
        dbt_relations=_dbt_relations(consumer),
        dbt_project_root=str(consumer.dbt_project_root) if consumer.dbt_project_root else None,
        consumer_path=str(consumer.file) if consumer.file else None)


def _read_exact(path) -> str:
    """A file's text with its line endings as they are (``read_text`` turns CRLF into LF).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "q.sql"
    >>> _ = f.write_bytes(b"SELECT 1\\r\\nFROM t\\r\\n")
    >>> _read_exact(f)
    'SELECT 1\\r\\nFROM t\\r\\n'
    >>> _ = f.write_bytes(b"SELECT 'caf\\xe9'\\n")
    >>> _read_exact(f)
    Traceback (most recent call last):
    skein.errors.SkeinError: ...q.sql:1: not UTF-8 text (byte 0xe9): Skein edits UTF-8 files only
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")  # bytes.decode keeps CRLF, as newline="" would
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SkeinError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): Skein "
                         "edits UTF-8 files only") from None


def _dbt_relations(consumer: Consumer) -> dict[str, str]:
    if consumer.dbt_project_root is None:
        return {}
    from skein.rewrite.dbt_mask import dbt_project

    project = dbt_project(str(consumer.dbt_project_root))
    return {f"source('{s}', '{t}')": relation for (s, t), relation in project.sources.items()}


def request_for_file(campaign: Campaign, schemas: dict[str, dict[str, str]], path,
                     dialect: str | None = None, default_schema: str = "main") -> RewriteRequest:
    """A request for one file, without scanning repositories (``skein rewrite``, consumers' CI)."""
    from pathlib import Path

    from skein.lineage import analyze_sql

    path = Path(path).resolve()
    text = _read_exact(path)
    root = next((p for p in path.parents if (p / "dbt_project.yml").is_file()), None)
    sql = text
    consumer = Consumer(id=path.name, kind="sql", dialect=dialect or campaign.sql_dialect, sql=text,
                        ownership=None, file=path, dbt_project_root=root)
    if root is not None:
        from skein.rewrite.dbt_mask import dbt_project
        from skein.dbt import DbtRenderError

        try:
            sql = dbt_project(str(root)).render(path, text).sql
        except DbtRenderError:
            sql = text
    consumer.lineage = analyze_sql(sql, consumer.dialect, schemas, default_schema)
    catalog = Catalog(schemas=schemas, consumers=[consumer], default_schema=default_schema)
    return request_for(campaign, catalog, consumer)
