"""The persistent job store (SQLAlchemy): jobs and API tokens, on SQLite or PostgreSQL."""

from suture.service.store.engine import make_engine
from suture.service.store.jobs import IdempotencyConflict, JobStore, OutputNameTaken
from suture.service.store.tokens import Principal, TokenStore, hash_token

__all__ = ["IdempotencyConflict", "JobStore", "OutputNameTaken", "Principal", "TokenStore", "hash_token",
           "make_engine"]
