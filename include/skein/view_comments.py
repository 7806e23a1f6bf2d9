"""A warehouse view's comment, kept across ``CREATE OR REPLACE VIEW``.

The comment is where a view's owner and tier live (``skein.ownership.parse_view_comment``).
DuckDB's ``CREATE OR REPLACE VIEW`` creates a new view without it (PostgreSQL keeps it: the
view is replaced in place), so the applier reads it first and puts it back in the same
transaction. Neither engine takes a bound parameter in ``COMMENT ON``: PostgreSQL's
statement is composed by psycopg's own ``sql.Literal`` and ``sql.Identifier``; DuckDB's
quoting is written here (DuckDB's Python API has no quoting function), by SQL's standard
rule: a quote inside a quoted string or identifier is doubled, nothing else is special.

>>> print(duckdb_comment_statement("Sales", 'my"view', "it's owner=x"))
COMMENT ON VIEW "Sales"."my""view" IS 'it''s owner=x'
"""

from __future__ import annotations


def read_comment(conn, dialect: str, view: str) -> tuple[str, str, str] | None:
    """(schema, view, comment) of the view as the engine spells them, or None when it has no
    comment (or does not exist)."""
    schema, _, name = view.rpartition(".")
    if dialect == "duckdb":
        row = conn.execute("SELECT schema_name, view_name, comment FROM duckdb_views() WHERE NOT "
                           "internal AND lower(schema_name) = lower(?) AND lower(view_name) = lower(?)",
                           [schema or "main", name]).fetchone()
    else:
        with conn.cursor() as cur:
            cur.execute("SELECT n.nspname, c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'v' AND "
                        "lower(n.nspname) = lower(%s) AND lower(c.relname) = lower(%s)",
                        (schema or "public", name))
            row = cur.fetchone()
    return tuple(row) if row is not None and row[2] is not None else None


def restore_comment(conn, dialect: str, kept: tuple[str, str, str] | None) -> None:
    """Put ``kept`` (``read_comment`` before the replace) back, inside the caller's transaction."""
    if kept is None:
        return
    schema, name, comment = kept
    if dialect == "duckdb":
        conn.execute(duckdb_comment_statement(schema, name, comment))
        return
    from psycopg import sql

    with conn.cursor() as cur:
        cur.execute(sql.SQL("COMMENT ON VIEW {}.{} IS {}").format(
            sql.Identifier(schema), sql.Identifier(name), sql.Literal(comment)))


def duckdb_comment_statement(schema: str, name: str, comment: str) -> str:
    """``COMMENT ON VIEW`` with quoted identifiers and a quoted string literal."""
    def ident(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    return f"COMMENT ON VIEW {ident(schema)}.{ident(name)} IS '" + comment.replace("'", "''") + "'"
