"""Run another team's templates in a child process that cannot reach Skein's secrets.

A consumer repository's Jinja is other people's code. ``skein.jinja_sandbox`` keeps it from
calling Python; this module keeps a sandbox escape, or a template that exhausts memory or
loops, from doing harm: the renderer is a separate process, started once per dbt project
and reused for all its renders, that

- gets a scrubbed environment (no ``AIRFLOW__*``, ``SKEIN_*``, database URLs or tokens: only
  what Python needs to import ``skein``), an empty working folder, and no inherited files;
- limits itself before it reads any template: address space (``RLIMIT_AS``), CPU time,
  written file size 0, no new processes, and, once its modules are imported, no new file
  descriptors at all, so it can open no file and no socket;
- answers in JSON (never pickle: a child that escaped the sandbox must not be able to send
  the parent code), each reply bounded in size and in wall-clock time.

A render that breaks a limit is an error of that render (the child is replaced); the
caller turns it into an escalation of that consumer.
"""

from __future__ import annotations

import json
import os
import selectors
import struct
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Callable

RENDER_SECONDS = 10  # one render's wall-clock limit (the child stops itself at this)
GRACE_SECONDS = 5  # then the parent kills it (a C-level loop ignores the child's alarm)
MEMORY_BYTES = 768 << 20  # the child's address space: interpreter ~100 MB, templates the rest
CPU_SECONDS = 600  # the child's whole life: a backstop should its parent vanish mid-render
MAX_REPLY_BYTES = 16 << 20  # a rendered model is at most a few MB (consumers: 1 MiB)
START_SECONDS = 30  # importing jinja2 on a loaded machine
_HEADER = struct.Struct(">I")
TEMPLATE_PREFIX = "consumer:"  # the file name macro files are compiled under: "consumer:macros/x.sql"


class RendererError(Exception):
    """The renderer process failed (limit, crash); the message says which."""


def child_environment() -> dict[str, str]:
    """The child's whole environment: built from nothing, so no secret can reach it.

    >>> sorted(child_environment())
    ['LC_ALL', 'PYTHONDONTWRITEBYTECODE', 'PYTHONIOENCODING', 'PYTHONPATH']
    """
    import skein

    return {"PYTHONPATH": str(Path(skein.__file__).resolve().parent.parent),
            "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def write_frame(stream, payload: dict) -> None:
    data = json.dumps(payload, default=str).encode("utf-8")
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


class RendererProcess:
    """One child running ``module``'s ``serve``; ``hello()`` gives the message that sets it up
    (sent again to a replacement child, so it must describe the current state)."""

    def __init__(self, module: str, hello: Callable[[], dict]):
        self.module, self.hello = module, hello
        self._proc: subprocess.Popen | None = None
        self._folder: tempfile.TemporaryDirectory | None = None
        self._finalizer: weakref.finalize | None = None

    def request(self, message: dict, seconds: float | None = None) -> dict:
        """Send one message and return the child's reply; ``RendererError`` when it did not
        answer within ``seconds`` (+ grace), died, or answered too much."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        try:
            return self._exchange(message, seconds or RENDER_SECONDS)
        except RendererError:
            self.close()
            raise

    def _start(self) -> None:
        self.close()
        self._folder = tempfile.TemporaryDirectory(prefix="skein-render-")
        self._proc = subprocess.Popen(
            [sys.executable, "-s", "-m", self.module], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_environment(),
            cwd=self._folder.name, close_fds=True)
        self._finalizer = weakref.finalize(self, _stop, self._proc, os.getpid(), self._folder)
        try:
            reply = self._exchange(self.hello(), START_SECONDS)
        except RendererError:
            self.close()
            raise
        if not reply.get("ok"):
            self.close()
            raise RendererError(str(reply.get("error", "the renderer did not start")))

    def _exchange(self, message: dict, seconds: float) -> dict:
        proc = self._proc
        try:
            write_frame(proc.stdin, {**message, "seconds": seconds})
        except (BrokenPipeError, OSError):
            raise RendererError(self._death("before it was asked")) from None
        header = self._read(_HEADER.size, seconds)
        (size,) = _HEADER.unpack(header)
        if size > MAX_REPLY_BYTES:
            raise RendererError(f"the rendered text is over {MAX_REPLY_BYTES >> 20} MiB: refused")
        try:
            reply = json.loads(self._read(size, seconds))
        except ValueError:
            raise RendererError("the renderer answered something that is not JSON") from None
        if not isinstance(reply, dict):
            raise RendererError("the renderer answered something that is not a reply")
        return reply

    def _read(self, size: int, seconds: float) -> bytes:
        deadline = time.monotonic() + seconds + GRACE_SECONDS
        fd = self._proc.stdout.fileno()
        chunks, got = [], 0
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while got < size:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise RendererError(f"no answer within {seconds:g} s (time limit): stopped")
                chunk = os.read(fd, min(size - got, 1 << 20))
                if not chunk:
                    raise RendererError(self._death("while rendering"))
                chunks.append(chunk)
                got += len(chunk)
        return b"".join(chunks)

    def _death(self, when: str) -> str:
        try:
            code = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            import signal

            name = signal.Signals(-code).name
            why = {"SIGXCPU": " (CPU limit)", "SIGKILL": " (killed, out of memory?)"}.get(name, "")
            return f"the renderer stopped {when}: {name}{why}"
        return f"the renderer stopped {when} (exit {code}; memory limit " \
               f"{MEMORY_BYTES >> 20} MiB?)"

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._proc = self._finalizer = self._folder = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None


def _stop(proc: subprocess.Popen, owner: int, folder: Any) -> None:
    """End the child (its parent only: a forked worker inherits this finalizer)."""
    if os.getpid() != owner:
        return
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    folder.cleanup()


# -- the child's side --------------------------------------------------------------------

class RenderTimeout(Exception):
    """The child's own alarm: a render ran past its seconds."""


def _limit_self() -> None:
    import resource

    for limit, value in ((resource.RLIMIT_AS, MEMORY_BYTES), (resource.RLIMIT_FSIZE, 0),
                         (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 0)):
        resource.setrlimit(limit, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 5))


def _no_new_descriptors() -> None:
    """From here on the child can open no file, pipe or socket (its own are 0, 1 and 2)."""
    import resource

    os.closerange(3, 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, 3))


def _alarm(_signum, _frame) -> None:
    raise RenderTimeout()


def serve(handle: Callable[[dict], dict], warm: Callable[[], None]) -> None:
    """The child's loop: limits first, then one reply per message until stdin closes.
    ``warm()`` imports and runs what ``handle`` will need before descriptors are closed."""
    import signal

    _limit_self()
    warm()
    describe(ZeroDivisionError())  # imports what describing an error needs
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the replies
    _no_new_descriptors()
    signal.signal(signal.SIGALRM, _alarm)
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # the parent closed the pipe (or died)
        message = json.loads(stdin.read(_HEADER.unpack(header)[0]))
        signal.setitimer(signal.ITIMER_REAL, float(message.get("seconds") or RENDER_SECONDS))
        try:
            reply = handle(message)
        except Exception as exc:  # noqa: BLE001 - whatever a template raises is its own failure
            reply = {"ok": False, "error": describe(exc, message.get("seconds"))}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        write_frame(stdout, reply)


def describe(exc: BaseException, seconds: Any = RENDER_SECONDS) -> str:
    """One line for what stopped a render, with the template's line when Jinja knows it.

    >>> describe(ZeroDivisionError("division by zero"))
    'cannot render Jinja: ZeroDivisionError: division by zero'
    """
    import jinja2

    from skein.errors import SkeinError, first_line

    file, line = _template_line(exc)
    where = f" ({file + ' ' if file else ''}line {line})" if line else ""
    if isinstance(exc, RenderTimeout):
        what = f"took more than {seconds} s (time limit): stopped"
    elif isinstance(exc, MemoryError):
        what = f"needs more than {MEMORY_BYTES >> 20} MiB of memory (memory limit): stopped"
    elif isinstance(exc, RecursionError):
        what = "recursion too deep (a macro calling itself?)"
    elif isinstance(exc, SkeinError):
        return " ".join(first_line(exc).split())[:500]
    elif isinstance(exc, jinja2.TemplateError):
        what = exc.message or first_line(exc)
    else:
        what = f"{type(exc).__name__}: {first_line(exc)}"
    return f"cannot render Jinja{where}: {' '.join(str(what).split())[:300]}"


def _template_line(exc: BaseException) -> tuple[str | None, int | None]:
    """The file (None: the model itself) and line of the last template code in the
    traceback (Jinja rewrites its frames so); macro files are compiled under their names."""
    file, line = None, getattr(exc, "lineno", None)
    name = getattr(exc, "filename", None) or ""
    if name.startswith(TEMPLATE_PREFIX):  # a syntax error in a macro file
        file = name[len(TEMPLATE_PREFIX):]
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name == "<template>":
            file, line = None, tb.tb_lineno
        elif name.startswith(TEMPLATE_PREFIX):
            file, line = name[len(TEMPLATE_PREFIX):], tb.tb_lineno
        tb = tb.tb_next
    return file, line
