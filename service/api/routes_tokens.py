"""/v1/tokens: admins create, list and revoke API tokens. A secret is shown once, at creation."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool

from suture.service.api.auth import Admin, State
from suture.service.schemas import ErrorBody, TokenCreate, TokenCreated, TokenView

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])
ERRORS = {401: {"model": ErrorBody, "description": "missing or invalid token"},
          403: {"model": ErrorBody, "description": "not an admin token"}}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TokenCreated, responses={
    **ERRORS, 400: {"model": ErrorBody, "description": "the body is not parseable"},
    413: {"model": ErrorBody, "description": "body too large"}})
async def create_token(body: TokenCreate, _: Admin, st: State) -> TokenCreated:
    return await run_in_threadpool(st.tokens.create, body.name, body.admin)


@router.get("", response_model=list[TokenView], responses=ERRORS)
async def list_tokens(_: Admin, st: State) -> list[TokenView]:
    return await run_in_threadpool(st.tokens.list)


@router.delete("/{token_id}", response_model=TokenView,
               responses={**ERRORS, 404: {"model": ErrorBody, "description": "no such token"},
                          409: {"model": ErrorBody, "description": "the environment's admin token"}})
async def revoke_token(token_id: int, _: Admin, st: State) -> TokenView:
    """Revoke a token and cancel its jobs (queued ones at once, running ones at their next check). The
    environment's admin token (SUTURE_ADMIN_TOKEN) cannot be revoked here: change the variable instead."""
    if not 0 <= token_id < 2**31:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id}")
    secret = st.settings.admin_token
    if (secret and await run_in_threadpool(st.tokens.is_secret, token_id, secret)) or \
            await run_in_threadpool(st.tokens.is_environment_admin, token_id):
        raise HTTPException(status.HTTP_409_CONFLICT, "this is the admin token of the server's environment "
                                                      "(SUTURE_ADMIN_TOKEN); change that variable to retire it")
    revoked = await run_in_threadpool(st.tokens.revoke, token_id)
    if revoked is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id}")
    await run_in_threadpool(st.jobs.cancel_owned, token_id)
    return revoked
