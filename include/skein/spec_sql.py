"""The SQL inside a campaign file: each ``columns`` expression is one comment-free column
expression, and ``forward`` one SELECT; problems are ``SpecError``s naming the field.

The text of an expression is spliced into every consumer, so what passes here is what other
teams' code will hold.
"""

from __future__ import annotations

from typing import Protocol

from skein.errors import SpecError, first_line


class CampaignSQL(Protocol):
    """What this check reads of a campaign (``skein.spec.Campaign``, which calls it: named
    here by what it offers, so the two modules do not import each other)."""

    sql_dialect: str
    columns: dict[str, str | None]
    forward: str | None

    def error(self, message: str, *path: str | int) -> SpecError: ...


def sql_problems(campaign: CampaignSQL):
    """Expressions in ``columns`` and the ``forward`` query must parse."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    dialect = campaign.sql_dialect
    for old, expression in campaign.columns.items():
        if expression is None:
            continue
        if not isinstance(expression, str) or not expression.strip():
            yield campaign.error("expression must be SQL text or null (dropped)", "columns", old)
            continue
        try:
            statements = [s for s in sqlglot.parse(expression, read=dialect) if s is not None]
        except SqlglotError as exc:
            yield campaign.error(f"expression {_short(expression)} does not parse: {first_line(exc)}",
                                 "columns", old)
            continue
        except RecursionError:  # sqlglot's parser recurses once per level of nesting
            yield campaign.error(f"expression {_short(expression)} is nested too deeply",
                                 "columns", old)
            continue
        # The text is spliced into every consumer: a second statement or a comment there
        # would be pasted into other teams' code (``x -- y`` comments out the rest of a line).
        if len(statements) != 1:
            yield campaign.error(f"expression {expression!r} must be one SQL expression, not "
                                 f"{len(statements)} statements", "columns", old)
            continue
        parsed = statements[0]
        if isinstance(parsed, (exp.Query, exp.Command)) or parsed.find(exp.Query):
            yield campaign.error(f"expression {expression!r} must be a column expression, "
                                 "not a query", "columns", old)
        elif has_comments(expression, dialect):
            yield campaign.error(f"expression {expression!r} holds a comment: write it in the "
                                 "campaign file as a YAML comment instead", "columns", old)
    if campaign.forward:
        try:
            parsed = sqlglot.parse(campaign.forward, read=dialect)
        except SqlglotError as exc:
            yield campaign.error(f"does not parse: {first_line(exc)}", "forward")
        except RecursionError:
            yield campaign.error("does not parse: nested too deeply", "forward")
        else:
            if len(parsed) != 1 or not isinstance(parsed[0], exp.Query):
                yield campaign.error("must be a single SELECT building the target", "forward")


def has_comments(sql: str, dialect: str) -> bool:
    """Whether ``sql`` holds a comment (``--``, ``/* */``, ``#`` where the dialect has it).

    >>> has_comments("account_id -- x", "duckdb"), has_comments("'--' || a", "duckdb")
    (True, False)
    """
    from sqlglot.dialects.dialect import Dialect

    return any(token.comments for token in Dialect.get_or_raise(dialect).tokenize(sql))


def _short(expression: str, limit: int = 80) -> str:
    """An expression as a message quotes it: the first ``limit`` characters.

    >>> _short("(" * 100 + "x" + ")" * 100, 10)
    "'((((((((((...' (201 characters)"
    """
    if len(expression) <= limit:
        return repr(expression)
    return repr(expression[:limit])[:-1] + f"...' ({len(expression)} characters)"
