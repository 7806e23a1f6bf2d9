"""Paths that come from users and repositories, checked before anything is read or written.

A consumer path is git's (tracked, relative); a run id or campaign id becomes a folder name.
Either could lead out of where Skein may act: a symlink into another repository or to
``/etc/passwd``, or ``..``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from skein.errors import SkeinError

# A consumer repository's own configuration can make git run programs: its hooks (a
# post-merge hook would run inside Skein's merge, with Skein's environment) and an fsmonitor.
# Every git command Skein runs on one turns both off. (Filter and merge drivers named in the
# repository's own .git/config are the limit: docs/guarantees.md, section 11.)
GIT_NO_REPO_PROGRAMS = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")


def symlink_on_path(repo: Path, rel: str) -> str | None:
    """Why ``rel`` must not be followed: it, or a folder on its way, is a symlink (which may
    lead into another repository or anywhere on the machine). None for a plain file.

    >>> import tempfile, os
    >>> repo = Path(tempfile.mkdtemp())
    >>> os.symlink("/etc/passwd", repo / "q.sql")
    >>> symlink_on_path(repo, "q.sql")
    'q.sql is a symlink to /etc/passwd'
    >>> symlink_on_path(repo, "other.sql") is None
    True
    """
    here = repo
    for part in Path(rel).parts:
        here = here / part
        if here.is_symlink():
            return f"{here.relative_to(repo)} is a symlink to {os.readlink(here)}"
    return None


def run_folder(run_id: str) -> str:
    """``run_id`` as one folder name, one per run id. An id of letters, digits and ``-_.+``
    is its own name; any other gets those characters with the rest as ``_``, plus ``~`` and
    a hash of the id (``~`` is in no plain name), so ``team/a`` and ``team a`` never share a
    folder. A name that would lead elsewhere (``..``, ``.``, empty) is refused, since the
    run's files would land outside it.

    >>> run_folder("r1"), run_folder("team/a"), run_folder("team a")
    ('r1', 'team_a~65f838a2fbff', 'team_a~35a622062702')
    >>> run_folder("manual__2026-12-03T00:00:00+00:00")
    'manual__2026-12-03T00_00_00+00_00~5c01f9c1ac46'
    >>> run_folder("..")
    Traceback (most recent call last):
    skein.errors.SkeinError: run id '..' cannot name a folder: use letters, digits and - _ . + (not only dots)
    """
    safe = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in run_id)
    if not safe.strip(".") or len(safe) > 200:
        raise SkeinError(f"run id {run_id!r} cannot name a folder: use letters, digits and "
                         "- _ . + (not only dots)")
    if safe == run_id:
        return safe
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{safe}~{digest}"


def not_utf8_name(name: str) -> str | None:
    r"""Why ``name`` (a path read from git or the file system, undecodable bytes held as
    surrogates) cannot name a consumer: it is not UTF-8, so no id, report or JSON can carry it.
    The message shows the name with those bytes escaped. None for a UTF-8 name.

    >>> print(not_utf8_name("growth/dur\udce9e.sql"))
    file name growth/dur\xe9e.sql is not UTF-8 (byte 0xe9): rename it, or migrate it by hand
    >>> not_utf8_name("growth/durée.sql") is None
    True
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(name[exc.start]) - 0xDC00
        return (f"file name {printable_name(name)} is not UTF-8 (byte {byte:#04x}): rename it, "
                "or migrate it by hand")
    return None


def printable_name(name: str) -> str:
    r"""``name`` with bytes that are not UTF-8 written as ``\xNN``.

    >>> print(printable_name("dur\udce9e.sql"))
    dur\xe9e.sql
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


MAX_NAME_BYTES = 200  # a consumer's file name; suffixes (".retry.json", ".tmp") fit in 255


def file_name(consumer_id: str) -> str:
    """A flat, readable file name for a consumer id, one per id: ``/`` becomes ``__``; a ``_``
    next to another ``_`` or a ``/``, a ``%`` and control characters are ``%XX``-escaped, so
    ``consumer_id(file_name(x)) == x`` for every id (hand-written: percent-encoding every
    ``_`` and ``/`` would make every name unreadable).

    >>> file_name("repo/models/x.sql"), file_name("growth__x/y.sql"), file_name("growth/x/y.sql")
    ('repo__models__x.sql', 'growth%5F_x__y.sql', 'growth__x__y.sql')
    >>> file_name("a_/b"), file_name("a/_b"), file_name("50%/x y.sql")
    ('a%5F__b', 'a__%5Fb', '50%25__x y.sql')
    """
    out: list[str] = []
    for index, ch in enumerate(consumer_id):
        if ch == "/":
            out.append("__")
        elif ch == "_" and ((out and out[-1].endswith("_"))
                            or consumer_id[index + 1:index + 2] in ("_", "/")):
            out.append("%5F")  # a raw "_" is never next to another: "__" always means "/"
        elif ch == "%" or not ch.isprintable() or "\ud800" <= ch <= "\udfff":
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape")))
        else:
            out.append(ch)
    name = "".join(out)
    if name in ("", ".", ".."):  # not a name a folder can hold
        return "".join(f"%{b:02X}" for b in name.encode()) or "%"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        # File systems take 255 bytes; "%%" never appears in an escaped name, so a shortened
        # one is distinct from every other (up to the 64-bit hash).
        digest = hashlib.sha256(consumer_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        head = name.encode("utf-8", "surrogateescape")[:MAX_NAME_BYTES - 18]
        return head.decode("utf-8", "ignore") + "%%" + digest
    return name


def consumer_id(name: str) -> str:
    """The consumer id ``file_name`` made ``name`` from.

    >>> consumer_id("growth%5F_x__y.sql"), consumer_id("a__%5Fb"), consumer_id("50%25__x y.sql")
    ('growth__x/y.sql', 'a/_b', '50%/x y.sql')
    """
    if "%%" in name:
        raise ValueError(f"{name!r} is a shortened name: its consumer id is inside the file")
    raw = bytearray()
    for token in re.findall(r"%[0-9A-F]{2}|_+|[^%_]+|%", name):
        if token.startswith("%") and len(token) == 3:
            raw.append(int(token[1:], 16))
        elif token.startswith("_"):
            # a run of 2k underscores is k slashes; a raw "_" stands alone
            raw += b"/" * (len(token) // 2) if len(token) % 2 == 0 else b"_"
        elif token != "%":
            raw += token.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "surrogateescape")
