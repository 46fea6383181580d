"""Bearer-token authentication. A token sees its own jobs and checkpoints; an admin token sees all."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from suture.service.api.state import ServiceState, state
from suture.service.store import Principal

_bearer = HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer <token>")


async def principal(request: Request,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    found = await run_in_threadpool(state(request).tokens.authenticate, credentials.credentials)
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token",
                            headers={"WWW-Authenticate": "Bearer"})
    return found


async def admin(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    if not caller.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin token")
    return caller


async def maybe_principal(request: Request) -> Principal | None:
    """The caller when a valid bearer token is given, else None (routes that also answer anonymously; read
    from the header directly, so the OpenAPI schema does not declare them as needing a token)."""
    scheme, _, secret = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return await run_in_threadpool(state(request).tokens.authenticate, secret.strip())


Caller = Annotated[Principal, Depends(principal)]
MaybeCaller = Annotated[Principal | None, Depends(maybe_principal)]
Admin = Annotated[Principal, Depends(admin)]
State = Annotated[ServiceState, Depends(state)]


def sees(caller: Principal, owner_id: int | None) -> bool:
    return owner_id is not None and (caller.admin or caller.id == owner_id)
