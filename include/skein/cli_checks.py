"""What ``skein`` checks before any work: argument values, paths and, for ``skein validate``,
each campaign against what a run would refuse (the same checks ``skein plan`` meets later).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skein.errors import SkeinError


def validate_paths(given: list[str]) -> list[Path]:
    """The files ``skein validate`` checks: each file given, and the campaign files of each
    folder given (as the DAG factory lists them), each once."""
    from skein.campaign_files import campaign_files

    paths: dict[Path, Path] = {}
    for name in given:
        if not name:  # Path("") is the current folder
            raise SkeinError("an empty path: name a campaign file or a folder of them")
        path = Path(name)
        if path.is_dir() and not campaign_files(path):
            raise SkeinError(f"{name}: no campaign files (*.yaml, *.yml) in this folder")
        for file in campaign_files(path) if path.is_dir() else [path]:
            paths.setdefault(file.resolve(), file)
    return list(paths.values())


def deployed_campaigns(checked: set[Path]) -> dict:
    """The campaigns of ``$SKEIN_CAMPAIGNS_DIR`` (what the DAGs are built from), so that a file
    is checked against the ids already deployed; files that do not load are not this check's
    business (validating the folder reports them)."""
    import os

    from skein.campaign_files import campaign_files, load_campaign_files

    folder = os.environ.get("SKEIN_CAMPAIGNS_DIR")
    checked = {p.resolve() for p in checked}
    files = [p for p in campaign_files(Path(folder)) if p.resolve() not in checked] if folder else []
    return load_campaign_files(files).campaigns


def campaign_problems(campaign, offline: bool) -> list:
    """What ``skein plan`` would refuse beyond the file itself: repository globs (offline
    too), then the warehouse's catalog and the LLM agent's model in this environment."""
    from skein.catalog import repository_problems
    from skein.discovery import check_against_catalog, connect
    from skein.errors import SpecError, SpecErrors
    from skein.pipeline.rewrite import llm_agent

    problems = repository_problems(campaign)  # local folders: checked offline too
    if offline:
        return problems
    try:
        check_against_catalog(campaign, connect(campaign).schemas())
    except SpecError as exc:
        problems[:0] = exc.errors if isinstance(exc, SpecErrors) else [exc]
    if campaign.agents.llm.model is not None:  # without one, Airflow's connection gives it
        try:
            llm_agent(campaign)
        except SpecError as exc:
            problems.append(exc)
    return problems


def check_writable(folder: Path, what: str) -> None:
    """A file can be made in ``folder`` (``/proc/self`` exists and is a folder, yet nothing
    can be written there): a ``SkeinError`` naming ``what`` before any work is done."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SkeinError(f"{what}: cannot write in this folder: {exc.strerror or exc}") from None


def check_waves(campaign_file: str, waves: list[str] | None) -> None:
    """``--waves`` names waves of the campaign (an unknown one would silently apply nothing)."""
    from skein.spec import load_campaign

    if waves is None:
        return
    names = [w.name for w in load_campaign(campaign_file).rollout.waves]
    unknown = [w for w in waves if w not in names]
    if unknown:
        raise SkeinError(f"--waves: {', '.join(map(repr, unknown))}: not a wave of the campaign "
                         f"(its waves: {', '.join(names)})")


MAX_WORKERS = 256


def workers_arg(text: str) -> int:
    """``--workers``: a process count from 1 to ``MAX_WORKERS``.

    >>> workers_arg("2")
    2
    >>> workers_arg("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: '0' is not a number of processes from 1 to 256
    """
    if not text.isdigit() or len(text) > 4 or not 1 <= int(text) <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes from 1 to "
                                         f"{MAX_WORKERS}")
    return int(text)


def fraction_arg(text: str) -> float:
    """``--error-threshold``: a share from 0 to 1, like the campaign's own (``nan``, ``5``
    or ``-1`` would make a failed wave pass, or every wave fail).

    >>> fraction_arg("0.05")
    0.05
    >>> fraction_arg("nan")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: 'nan' is not a share from 0 to 1
    """
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:  # false for nan too
        raise argparse.ArgumentTypeError(f"{text!r} is not a share from 0 to 1")
    return value
