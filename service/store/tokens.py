"""API tokens: random secrets handed out once and stored as sha256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from suture.service.schemas import TokenCreated, TokenView
from suture.service.store.jobs import as_utc, now
from suture.service.store.tables import tokens

PREFIX = "stk_"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's row id, name and whether it may see everything."""

    id: int
    name: str
    admin: bool


def _view(row) -> TokenView:
    return TokenView(id=row.id, name=row.name, admin=row.admin, created_at=as_utc(row.created_at),
                     revoked=row.revoked_at is not None)


# The name of the row `ensure` makes for the environment's admin token.
ENVIRONMENT_ADMIN_NAME = "admin (SUTURE_ADMIN_TOKEN)"


class TokenStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def create(self, name: str, admin: bool = False, secret: str | None = None) -> TokenCreated:
        secret = secret or PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            row_id = conn.execute(tokens.insert().values(
                name=name, token_hash=hash_token(secret), admin=admin, created_at=now())).inserted_primary_key[0]
        row = self._row(row_id)
        return TokenCreated(**_view(row).model_dump(), token=secret)

    def ensure(self, name: str, secret: str, admin: bool) -> None:
        """Make `secret` a valid token (the admin token from the environment); idempotent. A revoked row of
        it is restored: the environment decides whether it is valid (change the variable to retire it)."""
        with self.engine.begin() as conn:
            found = conn.execute(select(tokens.c.id).where(tokens.c.token_hash == hash_token(secret))).first()
            if found is not None:
                conn.execute(update(tokens).where(tokens.c.id == found.id).values(revoked_at=None, admin=admin))
        if found is None:
            try:
                self.create(name, admin=admin, secret=secret)
            except Exception:  # another replica inserted it at the same moment
                if self.authenticate(secret) is None:
                    raise

    def authenticate(self, secret: str) -> Principal | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(tokens).where(tokens.c.token_hash == hash_token(secret))).first()
        if row is None or row.revoked_at is not None:
            return None
        return Principal(id=row.id, name=row.name, admin=row.admin)

    def _row(self, token_id: int):
        with self.engine.connect() as conn:
            return conn.execute(select(tokens).where(tokens.c.id == token_id)).first()

    def list(self) -> list[TokenView]:
        with self.engine.connect() as conn:
            return [_view(r) for r in conn.execute(select(tokens).order_by(tokens.c.id)).all()]

    def is_environment_admin(self, token_id: int) -> bool:
        """Whether the row is the admin token a server made from its environment (SUTURE_ADMIN_TOKEN). Told by
        its name, which no API or CLI token can take (NAME_PATTERN has no spaces or parentheses), so a
        process without the variable (`suture token revoke`) knows it too."""
        row = self._row(token_id)
        return row is not None and row.name == ENVIRONMENT_ADMIN_NAME

    def is_secret(self, token_id: int, secret: str) -> bool:
        row = self._row(token_id)
        return row is not None and row.token_hash == hash_token(secret)

    def revoke(self, token_id: int) -> TokenView | None:
        with self.engine.begin() as conn:
            conn.execute(update(tokens).where(tokens.c.id == token_id).values(revoked_at=now()))
        row = self._row(token_id)
        return None if row is None else _view(row)
