"""The portal's FastAPI app, mounted by Airflow's API server at ``/skein``.

Its OpenAPI schema is served at ``/skein/openapi.json`` behind the same authentication as
everything else (FastAPI's own schema and docs routes are off: they take no dependencies,
and the Swagger page would load from a CDN). Errors say what went wrong for the caller
(401, 403, 404, 409, 413, 422) and never how: an unexpected one is a 500 with an error id, logged
here with its traceback.

>>> app = create_app()
>>> sorted(r.path for r in app.routes if "pause" in r.path)
['/api/v1/campaigns/{campaign_id}/pause']
"""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from skein_airflow.portal import api, pages, teams
from skein_airflow.portal.auth import portal_user
from skein_airflow.portal.limits import BodyGuard

log = logging.getLogger(__name__)

# No inline script or style, nothing from another origin; framed only by Airflow's own UI.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'self'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "X-Frame-Options": "SAMEORIGIN"}


def create_app() -> FastAPI:
    app = FastAPI(title="Skein portal", version="1",
                  description="Skein's campaigns, consumers and controls (issue 11). Every route "
                              "needs an Airflow user: `Authorization: Bearer <token>` from "
                              "`POST /auth/token`, or Airflow's UI session cookie.",
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(api.router)
    app.include_router(api.actions)
    app.include_router(teams.api)  # before pages: /owners/{owner} and consumers.csv
    app.include_router(teams.bulk_actions)
    app.include_router(teams.pages)
    app.include_router(pages.router)
    schema = APIRouter(dependencies=[Depends(portal_user)], include_in_schema=False)

    @schema.get("/openapi.json")
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    app.include_router(schema)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, unexpected_error)
    # inside the security headers (added after it: outermost), so its 401 and 413 carry them
    app.add_middleware(BodyGuard)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def wants_json(request: Request) -> bool:
    path = request.url.path
    return "/api/v1/" in path or path.endswith("/openapi.json")


async def http_error(request: Request, exc: StarletteHTTPException):
    headers = getattr(exc, "headers", None)
    if wants_json(request):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)
    login = None
    if exc.status_code == 401:
        from skein_airflow.portal.auth import login_url

        login = login_url(request)
    return pages.render(request, "error.html", status_code=exc.status_code, code=exc.status_code,
                        detail=exc.detail, login=login)


async def invalid_request(request: Request, exc: RequestValidationError):
    problems = [{"loc": e.get("loc"), "msg": e.get("msg")} for e in exc.errors()]
    if wants_json(request):
        return JSONResponse({"detail": problems}, status_code=422)
    return pages.render(request, "error.html", status_code=422, code=422,
                        detail="; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems),
                        login=None)


async def unexpected_error(request: Request, exc: Exception):
    error_id = uuid.uuid4().hex[:12]
    log.exception("Skein portal error %s on %s %s", error_id, request.method, request.url.path)
    detail = f"internal error {error_id} (logged by the API server)"
    response = (JSONResponse({"detail": detail}, status_code=500) if wants_json(request) else
                HTMLResponse(f"<!doctype html><title>Error</title><p>{detail}</p>", status_code=500))
    for name, value in HEADERS.items():  # the middleware is not on this path
        response.headers[name] = value
    return response
