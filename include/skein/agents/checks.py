"""What every check of the gate returns, and which kind of consumer a request is: shared by
the gate and the checks it runs (the dry run), so that neither imports the other.

>>> from skein.rewrite.request import RewriteRequest
>>> r = RewriteRequest(consumer_id="team/q.sql", text="", dialect="duckdb", source="a.b",
...                    target="c.d", columns={}, schemas={})
>>> consumer_kind(r)
'sql'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from skein.rewrite.request import RewriteRequest

PYTHON_SUFFIXES = (".py", ".ipynb")


class CheckResult(BaseModel):
    """What one check says about one proposed text.

    >>> CheckResult(name="scope", passed=False, feedback="line 3 changed a comment").passed
    False
    """

    model_config = ConfigDict(frozen=True)
    name: str
    passed: bool
    feedback: str = ""  # why it failed, in words a model (or a reviewer) can act on
    skipped: bool = False  # the check does not apply here (counts as passed)


def consumer_kind(request: RewriteRequest) -> Literal["sql", "python"]:
    """``python`` for ``.py``/``.ipynb`` files (or dialect ``python``), else ``sql``.

    >>> from skein.rewrite.request import RewriteRequest
    >>> r = RewriteRequest(consumer_id="team/jobs/report.py", text="", dialect="duckdb", source="a.b",
    ...                    target="c.d", columns={}, schemas={})
    >>> consumer_kind(r)
    'python'
    """
    name = (request.consumer_path or request.consumer_id).lower()
    if name.endswith(PYTHON_SUFFIXES) or request.dialect.lower() in ("python", "pandas"):
        return "python"
    return "sql"
