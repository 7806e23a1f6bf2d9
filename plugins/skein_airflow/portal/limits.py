"""Request bodies: who sends one is authenticated before a byte of it is read, and none over
``MAX_BODY_BYTES`` is read at all.

FastAPI reads and parses a route's JSON body before it runs the route's dependencies, so
without this an anonymous client could make the API server hold a body of any size (40 MB
cost 210 MB) before ``portal_user`` refused it. The portal's actions take a reason of at
most 2,000 characters: 64 KiB is far more than any of them needs.

A plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which would buffer): it
answers 401 or 413 itself and never calls ``receive`` for a refused request; an accepted
body is read here, at most ``MAX_BODY_BYTES + 1`` bytes, and handed on to the route.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

MAX_BODY_BYTES = 64 * 1024


class BodyGuard:
    """Authenticate (``auth.portal_user``) before any body is read; refuse bodies over
    ``limit`` with 413, by their ``Content-Length`` or, when chunked, once ``limit`` bytes
    have arrived."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _has_body(scope):
            return await self.app(scope, receive, send)
        length = _content_length(scope)
        if length is None:
            return await JSONResponse({"detail": "invalid Content-Length"}, 400)(scope, receive, send)
        refused = await _unauthenticated(scope)
        if refused is not None:
            return await refused(scope, receive, send)
        if length > self.limit:
            return await _too_large(self.limit)(scope, receive, send)
        body = await _read_at_most(receive, self.limit)
        if body is None:
            return await _too_large(self.limit)(scope, receive, send)
        return await self.app(scope, _replay(body, receive), send)


def _has_body(scope) -> bool:
    headers = dict(scope["headers"])
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


def _content_length(scope) -> int | None:
    """The declared length (0 when chunked), or None when it is not a number."""
    raw = dict(scope["headers"]).get(b"content-length", b"0")
    return int(raw) if raw.isdigit() and len(raw) <= 18 else None


async def _unauthenticated(scope) -> JSONResponse | None:
    """The 401 ``portal_user`` answers, from the headers alone; None for a known user."""
    from skein_airflow.portal.auth import portal_user

    try:
        await portal_user(Request(scope))
    except HTTPException as exc:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    return None


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body larger than {limit // 1024} KiB: refused"}, 413,
                        headers={"Connection": "close"})


async def _read_at_most(receive, limit: int) -> bytes | None:
    """The body, or None as soon as more than ``limit`` bytes have arrived."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that gives the route the body already read, then waits as the server's
    would (for the client to disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
