"""Crash points for fault-injection tests: the process dies where a power cut or a
``kill -9`` would leave it.

``SKEIN_CRASH_AT=<point>[:<n>]`` makes the n-th pass (default the first) through ``crash_point
(<point>)`` end the process at once with exit code 137, without cleanup, as SIGKILL would. Unset
(always, outside tests), a crash point costs one dictionary lookup. tests/test_crash_points.py
kills a run at each point and checks that every consumer is untouched or fully applied, and
that the next run finishes the job without writing anything twice.

>>> crash_point("git:after_commit")  # SKEIN_CRASH_AT unset: nothing happens
"""

from __future__ import annotations

import os

POINTS = ("git:after_commit", "git:after_merge", "view:in_transaction", "apply:after_write")
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    wanted = os.environ.get("SKEIN_CRASH_AT")
    if not wanted:
        return
    point, sep, nth = wanted.rpartition(":")
    if not (sep and nth.isdigit()):
        point, nth = wanted, "1"
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(nth):
        os._exit(137)
