"""One error root for the engine, a subclass per phase.

User errors (a bad campaign file, a missing warehouse) are ``SkeinError``s: the
CLI prints their message and exits non-zero, never a traceback.

>>> str(SpecError("campaign id must be lowercase", file="c.yaml", line=3, field="campaign"))
'c.yaml:3: campaign: campaign id must be lowercase'
"""

from __future__ import annotations


class SkeinError(Exception):
    """Anything Skein reports to a user as a message rather than a traceback."""


class SpecError(SkeinError):
    """A campaign file is invalid; names the file, line and field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        what = f"{self.field}: " if self.field else ""
        return f"{where}{what}{self.message}"


class SpecErrors(SpecError):
    """Several problems found in one campaign file, reported together."""

    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, file=first.file, line=first.line, field=first.field)

    def render(self) -> str:  # every problem, one per line
        return "\n".join(e.render() for e in getattr(self, "errors", [])) or super().render()


class YamlSyntaxError(SpecError):
    """A file is not YAML; ``problem`` is the parser's own words.

    >>> e = YamlSyntaxError("did not find expected node content", file="s.yaml", line=3)
    >>> str(e), e.problem
    ('s.yaml:3: invalid YAML: did not find expected node content', 'did not find expected node content')
    """

    def __init__(self, problem: str, *, file: str | None = None, line: int | None = None):
        self.problem = problem
        super().__init__(f"invalid YAML: {problem}", file=file, line=line)


class DbtRenderError(SkeinError):
    """A dbt model's Jinja cannot be rendered (unknown macro, bad syntax, a limit): the
    consumer is escalated with the reason."""


class DbtProjectError(DbtRenderError):
    """A dbt project's YAML cannot be read (syntax, a wrong type, a limit); names the file,
    line and field. Every consumer of that project is escalated with it."""


class WarehouseError(SkeinError):
    """The warehouse cannot be reached or read."""


class DiscoveryError(SkeinError):
    """Discovery cannot run at all (a single bad consumer never raises this)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none: how
    a parser's or an engine's error is quoted in a one-line report.

    >>> first_line(ValueError("Invalid expression\\n  SELECT 1 +\\n           ^"))
    'Invalid expression'
    >>> first_line(KeyError())
    'KeyError'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
