"""``create_app``: the JSON API under /api and the static web app at /, from one process."""
from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Sequence

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from lookalike import __version__
from lookalike.api.errors import install_error_handlers
from lookalike.api.fastpath import SimilarFastPath, UploadFastPath
from lookalike.api.schemas import ErrorResponse
from lookalike.api.deps import AppState, CatalogPool, catalog_path
from lookalike.api.metrics import install_metrics
from lookalike.api.params import reject_unknown_parameters
from lookalike.api.item_ids import RawItemPath
from lookalike.api.routes import ROUTERS
from lookalike.api.uploads import BodySizeLimit
from lookalike.catalog import Catalog
from lookalike.config import MAX_UPLOAD_BYTES

STATIC_DIR = Path(__file__).resolve().parents[1] / "web" / "static"
# Multipart framing (boundaries, part headers, form fields) on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def create_app(catalog_name: str, home=None, api_key: str | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, vae: str | None = None, http_cache: bool = True,
               warm: bool = False, catalogs: Sequence[str] | None = (), metrics: bool = True,
               similar_table: bool = True) -> FastAPI:
    """Open catalog ``catalog_name`` (under ``home``) and build the app serving it.

    ``api_key`` (default: $LOOKALIKE_API_KEY) enables the endpoints that change the catalog;
    without one the server is read-only. ``vae`` names the model behind the latent explorer
    (default: the newest VAE trained on this catalog). ``http_cache``: ETags (304 on
    If-None-Match) on images, thumbnails and GET search answers. ``warm``: load the index and
    what the first search would compute (``Catalog.warm``) before answering; otherwise that runs in
    a thread when the app starts (``/api/health/ready`` answers 503 until it is done).
    ``catalog_name`` answers ``/api/...``; every catalog also answers ``/api/catalogs/{name}/...``:
    ``catalog_name`` and ``catalogs`` (None: every catalog in ``home``), each opened on its first
    request. ``metrics`` adds ``GET /metrics`` (:mod:`lookalike.api.metrics`). ``similar_table``:
    "more like this" answers from each catalog's precomputed similar-items table (built when the
    catalog warms, rebuilt in the background after writes; ``Catalog.use_similar``), else live.
    """
    catalog = Catalog.open(catalog_name, home=home)
    key = api_key if api_key is not None else os.environ.get("LOOKALIKE_API_KEY") or None

    def make_state(cat: Catalog, vae: str | None = None) -> AppState:
        cat.use_similar(similar_table, refresh=similar_table)
        return AppState(catalog=cat, api_key=key, max_upload_bytes=max_upload_bytes, vae=vae,
                        http_cache=http_cache, metrics=counters)

    counters = None   # set below, before any request: install_metrics needs the pool

    default = make_state(catalog, vae)
    if warm:
        default.warm(background=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        default.warm()   # readiness: in a thread, so the server answers /api/health/live meanwhile
        yield

    app = FastAPI(
        title="lookalike",
        version=__version__,
        description="Visual product recommendation over one catalog: browse, more-like-this, upload search, "
                    "latent explorer, goes-with, clusters, map, duplicates, shop the look. Every route under "
                    "/api also answers for any served catalog under /api/catalogs/{catalog}.",
        responses={422: {"model": ErrorResponse}},
        docs_url=None if _offline_docs_assets() else "/docs",
        lifespan=lifespan,
    )
    app.state.lookalike = default
    app.state.catalogs = CatalogPool(default, None if catalogs is None else list(catalogs), make_state)
    install_error_handlers(app)
    app.add_middleware(UploadFastPath)   # inside the byte cap: it reads the body
    app.add_middleware(BodySizeLimit, max_bytes=max_upload_bytes + MULTIPART_OVERHEAD)
    if similar_table:   # inside the metrics and security headers, outside FastAPI's routing
        app.add_middleware(SimilarFastPath)
    strict = Depends(reject_unknown_parameters)   # an unknown query parameter or form field is a 422
    for router in ROUTERS:
        app.include_router(router, prefix="/api", dependencies=[strict])
    for router in ROUTERS:  # the same routes for any served catalog by name
        app.include_router(router, prefix="/api/catalogs/{catalog}", dependencies=[Depends(catalog_path), strict])
    if metrics:
        counters = install_metrics(app, app.state.catalogs)
        default.metrics = counters

    app.add_middleware(SecurityHeaders)
    app.add_middleware(RawItemPath)  # ids with '/' (dress/image) are one encoded path segment

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _mount_offline_docs(app)
    return app


#: what ``lookalike serve --workers N`` hands its worker processes (read by :func:`app_from_env`)
SERVE_ENV = {"catalog": "LOOKALIKE_SERVE_CATALOG", "home": "LOOKALIKE_HOME", "max_upload_bytes": "LOOKALIKE_MAX_UPLOAD_BYTES",
             "vae": "LOOKALIKE_SERVE_VAE", "http_cache": "LOOKALIKE_HTTP_CACHE",
             "catalogs": "LOOKALIKE_SERVE_CATALOGS", "similar_table": "LOOKALIKE_SIMILAR_TABLE"}


def app_from_env() -> FastAPI:
    """The app factory each worker process calls (``uvicorn lookalike.api.main:app_from_env --factory
    --workers N``): settings from :data:`SERVE_ENV` ($LOOKALIKE_SERVE_CATALOG required; the API key
    from $LOOKALIKE_API_KEY as in :func:`create_app`); warms the catalog before serving. Every worker
    opens the catalog itself and memory-maps the same vector and index files; each request checks
    the catalog's data version, so a write through any worker or the CLI shows in all of them."""
    env = os.environ
    catalog = env.get(SERVE_ENV["catalog"])
    if not catalog:
        raise RuntimeError(f"set {SERVE_ENV['catalog']} to the catalog to serve")
    return create_app(catalog, home=env.get(SERVE_ENV["home"]) or None,
                      max_upload_bytes=int(env.get(SERVE_ENV["max_upload_bytes"]) or MAX_UPLOAD_BYTES),
                      vae=env.get(SERVE_ENV["vae"]) or None,
                      http_cache=env.get(SERVE_ENV["http_cache"], "1") not in ("0", "false", "no"), warm=True,
                      similar_table=env.get(SERVE_ENV["similar_table"], "1") not in ("0", "false", "no"),
                      catalogs=_catalogs_setting(env.get(SERVE_ENV["catalogs"], "")))


def _catalogs_setting(text: str) -> list[str] | None:
    """$LOOKALIKE_SERVE_CATALOGS -> ``create_app(catalogs=...)``: ``*`` every catalog of the home,
    else comma-separated names beside the default one."""
    return None if text.strip() == "*" else [name for name in text.split(",") if name.strip()]


def _offline_docs_assets() -> Path | None:
    """Swagger UI's files from the swagger-ui-bundle package (FastAPI's default loads them from a
    CDN, which shows a blank page offline or behind a firewall)."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def _mount_offline_docs(app: FastAPI) -> None:
    assets = _offline_docs_assets()
    if assets is None:
        return
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="lookalike API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'")


class SecurityHeaders:
    """Pure ASGI middleware adding nosniff/referrer/CSP headers. /docs (Swagger UI's page has an inline
    script) is left without a CSP; the web app itself uses no inline script or style attributes."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope["path"].startswith(("/docs", "/redoc"))

        async def add_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if not docs:
                    headers.append((b"content-security-policy", _CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add_headers)
