"""Crash points for fault-injection tests: the process dies where a power cut or a
``kill -9`` would leave it, or stops there so that a test can kill it from outside.

``SKEIN_CRASH_AT=<point>[:<n>]`` makes the n-th pass (default the first) through ``crash_point
(<point>)`` end the process at once with exit code 137, without cleanup, as SIGKILL would. Unset
(always, outside tests), a crash point costs one dictionary lookup. tests/test_crash_points.py
kills a run at each point and checks that every consumer is untouched or fully applied, and
that the next run finishes the job without writing anything twice.

``SKEIN_PAUSE_AT=<point>[:<n>]`` with ``SKEIN_PAUSE_MARKER=<file>`` makes the n-th pass wait
there instead (``SKEIN_PAUSE_S`` seconds, default 300), in the first process to get there
only: it creates the marker file (holding its process id and the point), and a process
that finds the file already there goes on. A test that sees the file knows where that
process is, and kills whatever runs it (tests/test_fleet_failover.py kills a Celery worker
mid-wave this way).

>>> crash_point("git:after_commit")  # SKEIN_CRASH_AT and SKEIN_PAUSE_AT unset: nothing happens
"""

from __future__ import annotations

import os
import time

POINTS = ("git:after_commit", "git:after_merge", "view:in_transaction", "apply:after_write",
          "rollback:after_write", "rollback:after_restore")
_passes: dict[str, int] = {}


def _reached(setting: str, name: str) -> bool:
    """Whether this pass through ``name`` is the one ``setting`` (``point[:n]``) names."""
    point, sep, nth = setting.rpartition(":")
    if not (sep and nth.isdigit()):
        point, nth = setting, "1"
    if point != name:
        return False
    _passes[name] = _passes.get(name, 0) + 1
    return _passes[name] == int(nth)


def crash_point(name: str) -> None:
    crash, pause = os.environ.get("SKEIN_CRASH_AT"), os.environ.get("SKEIN_PAUSE_AT")
    if not (crash or pause):
        return
    if crash and _reached(crash, name):
        os._exit(137)
    marker = os.environ.get("SKEIN_PAUSE_MARKER")
    if pause and marker and not crash and _reached(pause, name):
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # another process paused first
            return
        os.write(fd, f"{os.getpid()} {name}\n".encode())
        os.close(fd)
        time.sleep(float(os.environ.get("SKEIN_PAUSE_S", "300")))
