"""The job store's tables. Plain SQLAlchemy Core, portable between SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

tokens = Table(
    "suture_tokens", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex of the secret
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

jobs = Table(
    "suture_jobs", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # submission order; the page cursor
    Column("id", String(32), nullable=False, unique=True),
    Column("owner_id", Integer, ForeignKey("suture_tokens.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("model", String(200), nullable=False, index=True),
    Column("method", String(100)),
    Column("spec", JSON, nullable=False),  # the JobCreate body, as validated
    Column("status", String(16), nullable=False, index=True),
    Column("progress", Float, nullable=False, default=0.0),
    Column("stage", String(200)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("result", JSON),
    Column("error", Text),
    Column("worker", String(200)),  # which worker runs it (node/pid), for operators and fault tests
    Column("output_name", String(64)),  # unique per token (its area of the artifacts directory)
    Column("idempotency_key", String(200)),
    Column("request_hash", String(64)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),  # the lease: refreshed while a run is alive
    UniqueConstraint("owner_id", "idempotency_key", name="uq_job_idempotency"),
    UniqueConstraint("owner_id", "output_name", name="uq_job_output"),
)
