"""The FastAPI application: `create_app(settings)` wires the store, auth, routes, metrics and, when this
replica runs jobs, the Ray worker pool and its dispatcher (started and stopped with the app)."""

from __future__ import annotations

import logging
import math
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from suture.editor.paths import suture_home
from suture.service.api import routes_checkpoints, routes_jobs, routes_ops, routes_tokens
from suture.service.api.job_body import add_job_body_schema
from suture.service.api.limits import BodySizeLimit
from suture.service.api.metrics import Metrics
from suture.service.api.state import ServiceState
from suture.service.api.validation_errors import bounded_errors
from suture.service.jobs import ModelCatalog
from suture.service.settings import ServiceSettings
from suture.service.store import JobStore, TokenStore, make_engine
from suture.service.store.tokens import ENVIRONMENT_ADMIN_NAME

log = logging.getLogger("suture.api")


def _start_workers(st: ServiceState) -> None:
    """Ray, the workers and the dispatcher run in a child process (workers/host.py) that a supervisor
    restarts when it or Ray fails, so the API never goes down with Ray."""
    from suture.service.workers.supervisor import Supervisor

    st.supervisor = Supervisor(st.settings, suture_home() / "service")
    st.supervisor.start()


def _stop_workers(st: ServiceState) -> None:
    if st.supervisor is not None:
        st.supervisor.stop()
        st.supervisor = None


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings.from_env()
    engine = make_engine(settings.database_url)
    st = ServiceState(settings=settings, jobs=JobStore(engine, settings.max_attempts), tokens=TokenStore(engine),
                      catalog=ModelCatalog(settings.models), metrics=Metrics())
    st.metrics.watch_store(st.jobs.counts, lambda: (st.workers_health()["busy"], st.workers_health()["workers"]))
    if settings.admin_token:
        st.tokens.ensure(ENVIRONMENT_ADMIN_NAME, settings.admin_token, admin=True)
    if not settings.artifacts_dir.exists():  # new: this user's only (an operator's shared mount stays as it is)
        settings.artifacts_dir.mkdir(parents=True, mode=0o700)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.dispatch:
            await run_in_threadpool(_start_workers, st)
        try:
            yield
        finally:
            await run_in_threadpool(_stop_workers, st)
            engine.dispose()

    app = FastAPI(title="suture", version=_version(), lifespan=lifespan,
                  description="Edit, evaluate and repair transformer language models as jobs. "
                              "Authenticate with `Authorization: Bearer <token>`.")
    app.state.suture = st
    default_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = add_job_body_schema(default_openapi())
        return app.openapi_schema

    app.openapi = openapi
    for module in (routes_jobs, routes_checkpoints, routes_tokens, routes_ops):
        app.include_router(module.router)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        st.metrics.requests.labels(request.method, name, str(response.status_code)).inc()
        st.metrics.latency.labels(request.method, name).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        response = await http_exception_handler(request, exc)
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            response.headers["Allow"] = ", ".join(_allowed_methods(app, request.scope))
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # The default handler echoes each error's input, which may hold NaN or Infinity that JSON cannot
        # carry (a 500); the echo is made JSON-safe instead.
        return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(
            bounded_errors(exc.errors()), custom_encoder={Exception: str}))})

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


def _json_safe(value):
    """`value` with every non-finite float (and integer beyond 64 bits) written as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63 - 1:
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _allowed_methods(app: FastAPI, scope) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("suture")
    except metadata.PackageNotFoundError:
        return "0"
