"""The read-only web app: a JSON API under /api/ and the page that draws it.

Every route is a GET that calls one query in ``_queries``; an expected error
becomes a JSON ``{"error": "..."}`` with a 4xx status, never a traceback.

Around the routes, outermost first: the Host check (a DNS-rebinding page names
its own host, so only loopback names and the hosts the server was started on
are answered), the token gate when there is a token, and the headers that keep
the page's own scripts the only ones it runs.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lakelet import InvalidNameError, Lake, LakeletError, NotFoundError, __version__

from . import _queries as q

__all__ = ["LOOPBACK_HOSTS", "SECURITY_HEADERS", "STATIC", "TOKEN_COOKIE", "create_app"]

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "lakelet_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")  # as a Host header names them, without the port

# Scripts only from the page's own files: no inline script, no handler attribute, no javascript:
# URL runs even if a string from a record slipped into the page as markup. No referrer: the
# page's URL may carry ?token=, and a forge link must not receive it.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class _TokenGate:
    """Lets a request through only with the token: a Bearer header, the cookie, or ?token= (which
    then sets the cookie, so the link printed by `lakelet ui` works in a browser)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.expected = token.encode()

    def matches(self, offered: str | None) -> bool:
        # as bytes: compare_digest refuses a str with non-ASCII characters (?token=%C3%A9)
        return offered is not None and hmac.compare_digest(
            offered.encode(errors="surrogatepass"), self.expected
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        offered = request.query_params.get("token")
        header = request.headers.get("authorization", "")
        candidates = [
            offered,
            request.cookies.get(TOKEN_COOKIE),
            header.removeprefix("Bearer ") if header.startswith("Bearer ") else None,
        ]
        if not any(self.matches(c) for c in candidates):
            response: Response = JSONResponse(
                {"error": "this lakelet ui needs its token: open the URL `lakelet ui` printed"},
                status_code=401,
            )
            await response(scope, receive, send)
            return

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start" and offered:
                cookie = f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _with_security_headers(app: ASGIApp) -> ASGIApp:
    async def secured(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await app(scope, receive, send_secured if scope["type"] == "http" else send)

    return secured


def create_app(lake: Lake, token: str | None = None, hosts: Sequence[str] = ()) -> ASGIApp:
    """The app for one lake. With ``token``, every request must carry it. A request whose Host
    header names neither loopback nor one of ``hosts`` ("*": any) is refused with a 400."""
    app = FastAPI(
        title="lakelet",
        version=__version__,
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,  # FastAPI's doc pages load scripts from a CDN; the page may be offline
        description="Read-only view of a lakelet lake: names, lineage, datasets and pipeline runs.",
    )

    @app.exception_handler(LakeletError)
    async def expected(_: Request, error: LakeletError) -> JSONResponse:
        status = 404 if isinstance(error, NotFoundError | InvalidNameError) else 400
        return JSONResponse({"error": str(error)}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": f"{error.detail}: {request.url.path}"}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        body = {"error": f"{where}: {first.get('msg')}", "detail": jsonable_encoder(error.errors())}
        return JSONResponse(body, status_code=422)

    @app.get("/api/lake", summary="The lake: root, remote, counts, names grouped by top-level prefix")
    def lake_overview() -> dict[str, Any]:
        return q.overview(lake)

    @app.get("/api/names", summary="Names under a prefix, optionally filtered by a search string")
    def names(
        prefix: str = "",
        q_: Annotated[str, Query(alias="q")] = "",
        limit: Annotated[int, Query(ge=1, le=q.MAX_NAMES)] = 500,
    ) -> dict[str, Any]:
        return q.names(lake, prefix, q_, limit)

    @app.get("/api/files/{name:path}", summary="One name: record, lineage, inputs and what derives from it")
    def file(name: str) -> dict[str, Any]:
        return q.file_info(lake, name)

    @app.get("/api/lineage", summary="The lineage graph around a name, or of every stage run")
    def lineage(
        name: str | None = None,
        depth: Annotated[int, Query(ge=1, le=50)] = 3,
        direction: Literal["upstream", "downstream", "both"] = "both",
    ) -> dict[str, Any]:
        return q.lineage(lake, name, depth, direction)

    @app.get("/api/datasets", summary="Every dataset with its latest version")
    def datasets() -> list[dict[str, Any]]:
        return q.datasets(lake)

    @app.get("/api/datasets/{name:path}", summary="A dataset version: schema, partitions, files, statistics")
    def dataset(name: str, version: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
        return q.dataset(lake, name, version)

    @app.get("/api/rows/{name:path}", summary="The first rows of a dataset version (local files only)")
    def rows(
        name: str,
        version: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    ) -> dict[str, Any]:
        return q.rows(lake, name, version, limit)

    @app.get("/api/runs", summary="Pipeline runs, newest first")
    def runs() -> list[dict[str, Any]]:
        return q.runs(lake)

    @app.get("/api/runs/{run_id}", summary="One pipeline run: stages run, skipped, failed; durations; why")
    def run(run_id: str) -> dict[str, Any]:
        return q.run(lake, run_id)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    gated = _with_security_headers(_TokenGate(app, token) if token else app)
    return TrustedHostMiddleware(gated, allowed_hosts=[*LOOPBACK_HOSTS, *hosts], www_redirect=False)
