"""Skein's documentation (``docs/*.md`` of the project) as portal pages: Markdown rendered
with raw HTML disabled (``skein.evidence.markdown_html``), links between the pages kept."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import HTTPException, status
from pydantic import BaseModel

DOCS_DIR = Path(__file__).resolve().parents[3] / "docs"
_MD_LINK = re.compile(r'href="(?:docs/)?([A-Za-z0-9_-]+)\.md(#[^"]*)?"')


class DocRef(BaseModel):
    name: str
    title: str


class Doc(DocRef):
    html: str


def _title(path: Path) -> str:
    first = path.read_text(encoding="utf-8").lstrip().splitlines()[:1]
    return first[0].lstrip("# ").strip() if first and first[0].startswith("#") else path.stem


def index(directory: Path = DOCS_DIR) -> list[DocRef]:
    """Every page, by name (the file's stem) and title (its first heading)."""
    return [DocRef(name=p.stem, title=_title(p)) for p in sorted(directory.glob("*.md"))]


def page(name: str, directory: Path = DOCS_DIR) -> Doc:
    """One page; only names of files in ``directory`` are served (no paths).

    >>> page("../README")
    Traceback (most recent call last):
    ...
    fastapi.exceptions.HTTPException: 404: no such page
    """
    from skein.evidence import markdown_html

    known = {p.stem: p for p in directory.glob("*.md")}
    if name not in known:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such page")
    html = markdown_html(known[name].read_text(encoding="utf-8"))
    # links to sibling pages (`campaign-dags.md`) go to their portal page (`campaign-dags`)
    return Doc(name=name, title=_title(known[name]), html=_MD_LINK.sub(r'href="\1\2"', html))
