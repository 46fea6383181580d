"""Health, Prometheus metrics, and the catalogs of models and methods."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from suture.editor.errors import UnknownMethodError
from suture.editor.registry import available_methods, get_method, method_load_errors
from suture.service.api.auth import Caller, MaybeCaller, State
from suture.service.schemas import CatalogView, ErrorBody, MethodCatalogView, MethodView, UnavailableMethod

router = APIRouter(tags=["service"])


@router.get("/healthz")
async def healthz(st: State, caller: MaybeCaller) -> dict:
    """200 when the job store answers; `workers` says how many actors this replica drives and `ray` whether
    its Ray answers ("ok", "down", "restarting", or "off" for an API-only replica). Job counts only for an
    admin token."""
    await run_in_threadpool(st.jobs.ping)
    out = {"status": "ok", **st.workers_health()}
    if caller is not None and caller.admin:
        out["jobs"] = await run_in_threadpool(st.jobs.counts)
    return out


@router.get("/metrics", response_class=PlainTextResponse, responses={
    200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
    401: {"model": ErrorBody, "description": "no valid token (unless the operator made /metrics public)"},
    403: {"model": ErrorBody, "description": "not an admin token"}})
async def metrics(st: State, caller: MaybeCaller) -> Response:
    """Prometheus metrics; needs an admin token unless the operator set SUTURE_PUBLIC_METRICS=1."""
    if not st.settings.public_metrics:
        if caller is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        if not caller.admin:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin token")
    body = await run_in_threadpool(generate_latest, st.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models", response_model=CatalogView, responses={401: {"model": ErrorBody}})
async def models(_: Caller, st: State) -> CatalogView:
    return CatalogView(items=st.catalog.names())


@router.get("/v1/methods", response_model=MethodCatalogView, responses={401: {"model": ErrorBody}})
async def methods(_: Caller) -> MethodCatalogView:
    """The methods jobs may name, and the installed ones that failed to load (with the reason)."""
    return MethodCatalogView(items=available_methods(), unavailable=[
        UnavailableMethod(name=name, error=error) for name, error in method_load_errors().items()])


@router.get("/v1/methods/{name}", response_model=MethodView, responses={
    401: {"model": ErrorBody}, 404: {"model": ErrorBody, "description": "no such method"}})
async def method(name: str, _: Caller) -> MethodView:
    """The method's kind and the JSON schema of its hyperparameters (what a job's `hparams` may hold;
    fields without a default there get a per-model default, e.g. the edit layer)."""
    try:
        impl = get_method(name)
    except UnknownMethodError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return MethodView(name=impl.name, job_kind="edit" if impl.takes_requests else "repair",
                      one_request_at_a_time=impl.one_request_at_a_time,
                      hparams_schema=impl.hparams_model.model_json_schema())
