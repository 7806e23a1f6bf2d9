"""The portal's HTML pages: the catalog, a campaign, a consumer, the docs; and their CSS and
JS, served here too so that every byte needs an authenticated user.

Jinja2 with autoescape on: consumer ids, reasons, diffs and LLM answers are untrusted text.
The only markup not escaped is what ``skein.evidence.markdown_html`` renders (raw HTML
disabled). Pages carry a strict Content-Security-Policy (``app``): no inline script, no
other origin, so even a missed escape could not run. Actions POST JSON to the API with
``static/portal.js``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader

from skein_airflow.portal import docs
from skein_airflow.portal.api import offset_query, tier_query
from skein_airflow.portal.auth import campaign_reader, portal_user, user_id

HERE = Path(__file__).resolve().parent
ASSETS = {"portal.css": "text/css; charset=utf-8", "portal.js": "text/javascript; charset=utf-8"}
PAGE_SIZE = 50

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                        trim_blocks=True, lstrip_blocks=True)
router = APIRouter(dependencies=[Depends(portal_user)], include_in_schema=False)


def render(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """``templates/<name>`` with what every page needs: where the portal is, who is looking."""
    base = request.scope.get("root_path", "").rstrip("/")
    user = getattr(request.state, "portal_user", None)
    html = templates.get_template(name).render(
        base=base, airflow=base.rsplit("/skein", 1)[0] + "/", user=user.get_name() if user else None,
        link=lambda *parts, **query: link(base, *parts, **query), markdown=markdown, **values)
    return HTMLResponse(html, status_code=status_code)


def link(base: str, *parts: str, **query: Any) -> str:
    """``base/part/part?query``, each part quoted (consumer ids hold ``/``, and anything).

    >>> link("/skein", "campaigns", "c", "consumers", "r/a b.sql", status="failed", owner=None)
    '/skein/campaigns/c/consumers/r/a%20b.sql?status=failed'
    """
    path = "/".join([base, *(quote(str(p), safe="/") for p in parts)])
    kept = {k: v for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(kept) if kept else "")


def markdown(text: str | None):
    """Markdown as safe HTML (raw HTML in the text is escaped, not rendered)."""
    from markupsafe import Markup

    from skein.evidence import markdown_html

    return Markup(markdown_html(text or ""))  # noqa: S704 - markdown-it with html disabled


def chart(burndown, source: str | None) -> str | None:
    """The burndown as an ``<img src>`` (matplotlib's SVG, ``portal.chart``), or None before
    anything was applied."""
    from skein_airflow.portal.chart import burndown_svg, data_uri

    svg = burndown_svg(burndown, source or "the old dataset")
    return data_uri(svg) if svg else None


@router.get("/", response_class=HTMLResponse)
def catalog_page(request: Request, user: Any = Depends(portal_user)) -> HTMLResponse:
    from skein_airflow.portal.api import list_campaigns

    return render(request, "catalog.html", rows=list_campaigns(user))


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(request: Request, campaign_id: str, user: Any = Depends(campaign_reader),
                  status_: str | None = Query(None, alias="status"), owner: str | None = None,
                  tier: int | None = tier_query(), kind: str | None = None, wave: str | None = None,
                  search: str | None = Query(None, max_length=200),
                  offset: int = offset_query()) -> HTMLResponse:
    from skein import views
    from skein_airflow.portal.api import campaign_out
    from skein_airflow.portal.sources import sources

    out = campaign_out(campaign_id, user)
    filters = {"status": status_, "owner": owner, "tier": tier, "kind": kind, "wave": wave,
               "search": search}
    page = views.consumer_page(sources().store, campaign_id, views.ConsumerFilter(**filters),
                               limit=PAGE_SIZE, offset=offset)
    burndown = views.burndown(sources().store, campaign_id)
    return render(request, "campaign.html", out=out, d=out.detail, page=page, filters=filters,
                  burndown=burndown, chart=chart(burndown, out.detail.row.source), me=user_id(user))


@router.get("/campaigns/{campaign_id}/consumers/{consumer_id:path}", response_class=HTMLResponse)
def consumer_page(request: Request, campaign_id: str, consumer_id: str,
                  user: Any = Depends(campaign_reader)) -> HTMLResponse:
    from skein_airflow.portal.api import get_consumer
    from skein_airflow.portal.auth import allowed

    return render(request, "consumer.html", campaign_id=campaign_id,
                  c=get_consumer(campaign_id, consumer_id),
                  can_edit=allowed(user, campaign_id, "PUT"))


@router.get("/docs", response_class=HTMLResponse)
def docs_index(request: Request) -> HTMLResponse:
    return render(request, "docs.html", pages=docs.index(), doc=None)


@router.get("/docs/{name}", response_class=HTMLResponse)
def docs_page(request: Request, name: str) -> HTMLResponse:
    from markupsafe import Markup

    doc = docs.page(name)
    return render(request, "docs.html", pages=docs.index(), doc=doc,
                  html=Markup(doc.html))  # noqa: S704 - markdown-it with html disabled


@router.get("/static/{name}")
def asset(name: str) -> Response:
    """The portal's CSS and JS (only these names: no path is ever read from the request)."""
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    return Response((HERE / "static" / name).read_bytes(), media_type=ASSETS[name],
                    headers={"Cache-Control": "private, max-age=300"})
