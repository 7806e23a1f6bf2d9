"""Property: every consumer id has its own run-directory files, and every run id its own folder.

Generated consumer ids are ``<repository>/<path>`` as discovery makes them, from names with
``/``, ``_`` and ``__``, dots, ``%``, spaces, glob characters (``[ab]``, ``*``, ``?``),
unicode, control characters and lone surrogates (a Latin-1 file name as git lists it), and
pairs built to collide under the old ``replace("/", "__")`` (``growth/x/y.sql`` and
repository ``growth__x``'s ``y.sql``). For each pair: the names ``skein.rundir.file_name``
gives are distinct, are single file names, and map back to their ids
(``skein.rundir.consumer_id``; a name shortened to fit 255 bytes is distinct by its hash
instead); the results of several consumers written to one real run directory read back as their own.
Run ids likewise: ``skein.paths.run_folder`` gives distinct folder names, or refuses the id.
1,000 generated cases per property (``ci`` profile, tests/conftest.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from skein.errors import SkeinError
from skein.paths import run_folder
from skein.rewrite.request import Escalation
from skein.paths import MAX_NAME_BYTES
from skein.rundir import RunDirectory, consumer_id, file_name

ODD = ["_", "__", "___", ".", "..", "%", "%2F", "%5F", " ", "[ab]", "*", "?", "~", "-", "\\",
       "é", "名", "\u202e", "\t", "\n", "\udce9", "%%"]
PART = st.lists(st.one_of(st.sampled_from(ODD), st.text(min_size=1, max_size=6)),
                min_size=1, max_size=5).map("".join).filter(lambda s: "/" not in s and "\0" not in s)
REPOS = PART
PATHS = st.lists(PART, min_size=1, max_size=4).map("/".join)
IDS = st.builds(lambda repo, path: f"{repo}/{path}", REPOS, PATHS)


def _collide(repo: str, path: str, index: int) -> tuple[str, str]:
    """Two ids the old names confused: one ``/`` of the id moved into the repository name
    as ``__`` (or the reverse)."""
    cid = f"{repo}/{path}"
    slashes = [i for i, ch in enumerate(cid) if ch == "/"][1:]
    if not slashes:
        return cid, f"{repo}__{path}/x.sql"
    cut = slashes[index % len(slashes)]
    return cid, cid[:cut] + "__" + cid[cut + 1:]


PAIRS = st.one_of(st.tuples(IDS, IDS),
                  st.builds(_collide, REPOS, PATHS, st.integers(0, 10)),
                  st.builds(lambda cid: (cid, cid.replace("/", "__", 1) + "/q.sql"), IDS))


def _check_name(cid: str, name: str) -> None:
    assert "/" not in name and "\0" not in name and name not in ("", ".", "..")
    assert len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES
    if "%%" not in name:
        assert consumer_id(name) == cid


@given(PAIRS)
@example(("growth/x/y.sql", "growth__x/y.sql"))
@example(("a_/b", "a/_b"))
@example(("r/a//b.sql", "r/a____b.sql"))
@example(("r/%2F.sql", "r//.sql"))
@example(("r/" + "d/" * 120 + "x.sql", "r/" + "d/" * 120 + "y.sql"))
def test_consumer_ids_get_distinct_names_that_map_back(pair):
    first, second = pair
    a, b = file_name(first), file_name(second)
    _check_name(first, a)
    _check_name(second, b)
    assert (a == b) == (first == second)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Results are JSON: an id with a lone surrogate (a Latin-1 file name) has none to write.
@given(st.lists(IDS.filter(_utf8), min_size=2, max_size=4, unique=True))
@example(["growth/x/y.sql", "growth__x/y.sql", "growth_/x/y.sql"])
def test_each_consumer_reads_back_its_own_result(ids):
    with tempfile.TemporaryDirectory() as tmp:
        files = RunDirectory(Path(tmp))
        for cid in ids:
            files.write_agent_result(cid, Escalation(consumer_id=cid, agent="rule", reason=cid))
        results = files.results(ids)
    assert {cid: r.consumer_id for cid, r in results.items()} == {cid: cid for cid in ids}


RUN_IDS = st.one_of(st.text(max_size=12), st.lists(st.sampled_from(ODD + ["team", "a", ":", "/"]),
                                                   max_size=5).map("".join))


@given(st.tuples(RUN_IDS, RUN_IDS))
@example(("team/a", "team a"))
@example(("team_a", "team/a"))
@example(("manual__2026-12-03T00:00:00+00:00", "manual__2026-12-03T00_00_00+00_00"))
def test_run_ids_get_distinct_folders_or_are_refused(pair):
    folders = []
    for run_id in pair:
        try:
            folders.append(run_folder(run_id))
        except SkeinError:
            return  # refused before anything is written
    assert all("/" not in f and f.strip(".") for f in folders)
    assert (folders[0] == folders[1]) == (pair[0] == pair[1])
