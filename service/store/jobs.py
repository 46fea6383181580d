"""Persistent jobs: submit (idempotently), claim, progress, finish, retry, cancel, list.

Every state change is one conditional UPDATE (`WHERE status = ...`), so two dispatchers, or a dispatcher
and a cancel request, never both win: whoever changes the row first decides.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, select, update
from sqlalchemy.exc import IntegrityError

from suture.service.schemas import JobCreate, JobStatus, JobView
from suture.service.store.tables import jobs

RUNNING, QUEUED = JobStatus.running.value, JobStatus.queued.value


def now() -> datetime:
    return datetime.now(UTC)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different body."""


class OutputNameTaken(Exception):
    pass


def _request_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def to_view(row) -> JobView:
    return JobView(
        id=row.id, kind=row.kind, model=row.model, method=row.method, status=row.status,
        progress=min(1.0, max(0.0, row.progress or 0.0)), stage=row.stage, attempts=row.attempts,
        output_name=row.output_name, result=row.result, error=row.error, worker=row.worker,
        created_at=as_utc(row.created_at), started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at), cancel_requested=bool(row.cancel_requested))


class JobStore:
    def __init__(self, engine: Engine, max_attempts: int = 3):
        self.engine = engine
        self.max_attempts = max_attempts

    # --- submission -------------------------------------------------------------------------------------

    def submit(self, owner_id: int, body: JobCreate, idempotency_key: str | None = None) -> tuple[JobView, bool]:
        """(job, created). A repeated idempotency key with the same body returns the first job."""
        spec = body.model_dump(mode="json")
        digest = _request_hash(spec)
        if idempotency_key is not None:
            existing = self._by_key(owner_id, idempotency_key)
            if existing is not None:
                return self._same_request(existing, digest), False
        job_id = uuid.uuid4().hex
        values = dict(id=job_id, owner_id=owner_id, kind=body.kind.value, model=body.model, method=body.method,
                      spec=spec, status=QUEUED, progress=0.0, attempts=0, max_attempts=self.max_attempts,
                      output_name=body.output_name or job_id, idempotency_key=idempotency_key,
                      request_hash=digest, cancel_requested=False, created_at=now())
        try:
            with self.engine.begin() as conn:
                conn.execute(jobs.insert().values(**values))
        except IntegrityError:
            if idempotency_key is not None:  # a concurrent request with the same key won the insert
                existing = self._by_key(owner_id, idempotency_key)
                if existing is not None:
                    return self._same_request(existing, digest), False
            raise OutputNameTaken(f"output_name {body.output_name!r} is already used by another of your jobs "
                                  "(queued, running or succeeded)") from None
        return self.get(job_id), True

    def _by_key(self, owner_id: int, key: str):
        with self.engine.connect() as conn:
            return conn.execute(select(jobs).where(and_(jobs.c.owner_id == owner_id,
                                                        jobs.c.idempotency_key == key))).first()

    @staticmethod
    def _same_request(row, digest: str) -> JobView:
        if row.request_hash != digest:
            raise IdempotencyConflict("Idempotency-Key was already used with a different request body")
        return to_view(row)

    # --- reading ----------------------------------------------------------------------------------------

    def row(self, job_id: str):
        with self.engine.connect() as conn:
            return conn.execute(select(jobs).where(jobs.c.id == job_id)).first()

    def get(self, job_id: str) -> JobView | None:
        row = self.row(job_id)
        return None if row is None else to_view(row)

    def owner_of(self, job_id: str) -> int | None:
        row = self.row(job_id)
        return None if row is None else row.owner_id

    def list(self, owner_id: int | None, status: str | None = None, kind: str | None = None,
             model: str | None = None, cursor: int | None = None, limit: int = 50) -> tuple[list[JobView], int | None]:
        """Newest first; `owner_id` None lists everyone's jobs (admins)."""
        query = select(jobs).order_by(jobs.c.seq.desc()).limit(limit + 1)
        for column, value in ((jobs.c.owner_id, owner_id), (jobs.c.status, status), (jobs.c.kind, kind),
                              (jobs.c.model, model)):
            if value is not None:
                query = query.where(column == value)
        if cursor is not None:
            query = query.where(jobs.c.seq < cursor)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        next_cursor = rows[limit - 1].seq if len(rows) > limit else None
        return [to_view(r) for r in rows[:limit]], next_cursor

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all())

    def queued(self, limit: int = 100) -> list:
        with self.engine.connect() as conn:
            return conn.execute(select(jobs.c.id, jobs.c.model).where(jobs.c.status == QUEUED)
                                .order_by(jobs.c.seq).limit(limit)).all()

    def succeeded_outputs(self, owner_id: int | None) -> list:
        query = select(jobs).where(jobs.c.status == JobStatus.succeeded.value).order_by(jobs.c.seq.desc())
        if owner_id is not None:
            query = query.where(jobs.c.owner_id == owner_id)
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def by_output(self, name: str, owner_id: int):
        """The job whose output is `name` among `owner_id`'s (names are unique per token), or None."""
        query = select(jobs).where(and_(jobs.c.output_name == name, jobs.c.owner_id == owner_id))
        with self.engine.connect() as conn:
            return conn.execute(query).first()

    def holders_of(self, name: str, limit: int = 11) -> list:
        """Up to `limit` succeeded jobs of any token whose output is `name`, newest first (for admins)."""
        query = (select(jobs).where(and_(jobs.c.output_name == name, jobs.c.status == JobStatus.succeeded.value))
                 .order_by(jobs.c.seq.desc()).limit(limit))
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def release_ended_name(self, owner_id: int, name: str) -> str | None:
        """Free `name` if the job holding it ended failed or cancelled (its name would otherwise be taken for
        good); the id of that job, whose leftover files the caller removes (a run that died after writing
        can leave them), or None when the name is held by a live or succeeded job, or by none."""
        ended = jobs.c.status.in_([JobStatus.failed.value, JobStatus.cancelled.value])
        holder = and_(jobs.c.owner_id == owner_id, jobs.c.output_name == name, ended)
        with self.engine.begin() as conn:
            row = conn.execute(select(jobs.c.id).where(holder)).first()
            if row is None:
                return None
            released = conn.execute(update(jobs).where(and_(holder, jobs.c.id == row.id)).values(output_name=None))
        return row.id if released.rowcount == 1 else None

    # --- state changes ----------------------------------------------------------------------------------

    def _update(self, job_id: str, where, **values) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(update(jobs).where(and_(jobs.c.id == job_id, where)).values(**values))
        return result.rowcount == 1

    def claim(self, job_id: str, worker: str) -> bool:
        """queued -> running, one more attempt; False when someone else claimed or cancelled it first."""
        return self._update(job_id, jobs.c.status == QUEUED, status=RUNNING, worker=worker, started_at=now(),
                            heartbeat_at=now(), attempts=jobs.c.attempts + 1, stage="starting", error=None)

    @staticmethod
    def _running(attempt: int | None):
        """Running, and (given `attempt`, the run's `attempts` at its claim) still that run: a run whose lease
        expired and whose job was claimed again must neither report nor finish it."""
        return jobs.c.status == RUNNING if attempt is None else and_(jobs.c.status == RUNNING,
                                                                     jobs.c.attempts == attempt)

    def progress(self, job_id: str, fraction: float, stage: str | None, attempt: int | None = None) -> bool:
        return self._update(job_id, self._running(attempt), progress=fraction, stage=stage, heartbeat_at=now())

    def heartbeat(self, job_ids: list[str]) -> None:
        if job_ids:
            with self.engine.begin() as conn:
                conn.execute(update(jobs).where(and_(jobs.c.id.in_(job_ids), jobs.c.status == RUNNING))
                             .values(heartbeat_at=now()))

    def cancel_requested(self, job_id: str) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar())

    def cancel_flags(self, job_ids: list[str]) -> set[str]:
        """Which of `job_ids` have been asked to cancel."""
        if not job_ids:
            return set()
        with self.engine.connect() as conn:
            return set(conn.execute(select(jobs.c.id).where(and_(jobs.c.id.in_(job_ids),
                                                                 jobs.c.cancel_requested.is_(True)))).scalars())

    def finish(self, job_id: str, status: JobStatus, result: dict | None = None, error: str | None = None,
               attempt: int | None = None) -> bool:
        values: dict[str, Any] = dict(status=status.value, result=result, error=error, finished_at=now(),
                                      stage=status.value)
        if status is JobStatus.succeeded:
            values["progress"] = 1.0
        return self._update(job_id, self._running(attempt), **values)

    def retry_or_fail(self, job_id: str, reason: str) -> JobStatus | None:
        """A run died (worker lost, lease expired): queue it again, or fail it once attempts are used up."""
        row = self.row(job_id)
        if row is None or row.status != RUNNING:
            return None
        if row.cancel_requested:
            self.finish(job_id, JobStatus.cancelled, error=f"cancelled; the run ended with: {reason}")
            return JobStatus.cancelled
        if row.attempts >= row.max_attempts:
            self.finish(job_id, JobStatus.failed, error=f"{reason}; gave up after {row.attempts} attempt(s)")
            return JobStatus.failed
        requeued = self._update(job_id, jobs.c.status == RUNNING, status=QUEUED, worker=None, progress=0.0,
                                stage=f"retrying after: {reason}"[:200], error=reason)
        return JobStatus.queued if requeued else None

    def expired_leases(self, lease_seconds: float) -> list[str]:
        cutoff = now() - timedelta(seconds=lease_seconds)
        with self.engine.connect() as conn:
            return list(conn.execute(select(jobs.c.id).where(and_(
                jobs.c.status == RUNNING, jobs.c.heartbeat_at < cutoff))).scalars())

    def cancel_owned(self, owner_id: int) -> int:
        """Cancel every unfinished job of `owner_id` (a revoked token): queued at once, running on request.
        Returns how many were touched."""
        with self.engine.begin() as conn:
            queued = conn.execute(update(jobs).where(and_(jobs.c.owner_id == owner_id, jobs.c.status == QUEUED))
                                  .values(status=JobStatus.cancelled.value, cancel_requested=True, finished_at=now(),
                                          stage="cancelled", error="its token was revoked")).rowcount
            running = conn.execute(update(jobs).where(and_(jobs.c.owner_id == owner_id, jobs.c.status == RUNNING))
                                   .values(cancel_requested=True)).rowcount
        return queued + running

    def cancel(self, job_id: str) -> JobView | None:
        """A queued job is cancelled at once; a running one is asked to stop at its next progress report."""
        if not self._update(job_id, jobs.c.status == QUEUED, status=JobStatus.cancelled.value,
                            cancel_requested=True, finished_at=now(), stage="cancelled"):
            self._update(job_id, jobs.c.status == RUNNING, cancel_requested=True)
        return self.get(job_id)
