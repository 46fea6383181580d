"""Health, Prometheus metrics, and the catalogs of models and methods."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from suture.editor.registry import available_methods
from suture.service.api.auth import Caller, State
from suture.service.schemas import CatalogView, ErrorBody

router = APIRouter(tags=["service"])


@router.get("/healthz")
async def healthz(st: State) -> dict:
    """200 when the job store answers; `workers` says how many actors this replica drives."""
    counts = await run_in_threadpool(st.jobs.counts)
    dispatcher = st.dispatcher
    return {"status": "ok", "jobs": counts,
            "workers": len(dispatcher.pool.slots) if dispatcher is not None else 0}


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics(st: State) -> Response:
    body = await run_in_threadpool(generate_latest, st.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models", response_model=CatalogView, responses={401: {"model": ErrorBody}})
async def models(_: Caller, st: State) -> CatalogView:
    return CatalogView(items=st.catalog.names())


@router.get("/v1/methods", response_model=CatalogView, responses={401: {"model": ErrorBody}})
async def methods(_: Caller) -> CatalogView:
    return CatalogView(items=available_methods())
