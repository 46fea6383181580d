"""The job store on SQLite and on a real PostgreSQL server (127.0.0.1:5432, database `test`)."""

from __future__ import annotations

import threading
import uuid

import pytest
from service_helpers import drop_postgres_database, postgres_database
from sqlalchemy import text

from suture.service.schemas import JobCreate, JobStatus
from suture.service.store import IdempotencyConflict, JobStore, OutputNameTaken, TokenStore, make_engine

BODY = {"kind": "edit", "model": "tiny", "method": "rome",
        "requests": [{"prompt": "The capital of {} is", "subject": "France", "target_new": "Rome"}]}


@pytest.fixture(scope="module")
def postgres_url():
    url = postgres_database("suture_store")
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    else:  # a database of this module's own on the real server
        engine = make_engine(request.getfixturevalue("postgres_url"))
    tokens = TokenStore(engine)
    # Each test owns fresh tokens, so tests sharing the PostgreSQL database never see each other's jobs.
    owner = tokens.create(f"user-{uuid.uuid4().hex[:8]}")
    other = tokens.create(f"other-{uuid.uuid4().hex[:8]}")
    yield JobStore(engine, max_attempts=2), tokens, owner.id, other.id
    engine.dispose()


def body(**changes) -> JobCreate:
    return JobCreate.model_validate({**BODY, **changes})


def test_submit_claim_progress_finish(stores):
    jobs, _, owner, _ = stores
    job, created = jobs.submit(owner, body())
    assert created and job.status is JobStatus.queued and job.output_name == job.id
    assert jobs.claim(job.id, "w1") and not jobs.claim(job.id, "w2")  # claimed once only
    assert jobs.progress(job.id, 0.5, "value")
    running = jobs.get(job.id)
    assert (running.status, running.progress, running.stage, running.attempts, running.worker) == (
        JobStatus.running, 0.5, "value", 1, "w1")
    assert jobs.finish(job.id, JobStatus.succeeded, result={"ok": 1})
    assert not jobs.finish(job.id, JobStatus.failed, error="late")  # terminal states do not change
    done = jobs.get(job.id)
    assert done.status is JobStatus.succeeded and done.result == {"ok": 1} and done.progress == 1.0
    assert done.finished_at is not None and done.finished_at.tzinfo is not None


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(stores):
    jobs, _, owner, other = stores
    first, created = jobs.submit(owner, body(), idempotency_key="k1")
    again, created_again = jobs.submit(owner, body(), idempotency_key="k1")
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        jobs.submit(owner, body(model="other"), idempotency_key="k1")
    theirs, created_theirs = jobs.submit(other, body(), idempotency_key="k1")  # keys are per token
    assert created_theirs and theirs.id != first.id


def test_concurrent_submissions_with_one_key_make_one_job(stores):
    jobs, _, owner, _ = stores
    ids, errors = [], []

    def submit():
        try:
            ids.append(jobs.submit(owner, body(), idempotency_key="race")[0].id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1


def test_output_names_are_unique(stores):
    jobs, _, owner, _ = stores
    name = f"fix-{uuid.uuid4().hex[:8]}"
    jobs.submit(owner, body(output_name=name))
    with pytest.raises(OutputNameTaken, match="output_name"):
        jobs.submit(owner, body(output_name=name))


def test_a_failed_or_cancelled_job_gives_its_output_name_back(stores):
    """Such a job's name can be released (its row then shows none); a queued, running or succeeded job's
    cannot. The submit route releases it when a new job of the token asks for the name."""
    jobs, _, owner, _ = stores
    name = f"fix-{uuid.uuid4().hex[:8]}"
    failed, _ = jobs.submit(owner, body(output_name=name))
    assert jobs.release_ended_name(owner, name) is None  # queued: kept
    jobs.claim(failed.id, "w1")
    assert jobs.release_ended_name(owner, name) is None  # running: kept
    jobs.finish(failed.id, JobStatus.failed, error="verdict failed")
    with pytest.raises(OutputNameTaken, match="queued, running or succeeded"):
        jobs.submit(owner, body(output_name=name))  # the store itself never takes a name back
    assert jobs.release_ended_name(owner, name) == failed.id and jobs.get(failed.id).output_name is None
    second, created = jobs.submit(owner, body(output_name=name))
    assert created and second.output_name == name
    assert jobs.cancel(second.id).status is JobStatus.cancelled
    assert jobs.release_ended_name(owner, name) == second.id
    third, _ = jobs.submit(owner, body(output_name=name))
    jobs.claim(third.id, "w1")
    jobs.finish(third.id, JobStatus.succeeded, result={})
    assert jobs.release_ended_name(owner, name) is None  # succeeded: kept


def test_a_dead_run_is_retried_then_failed_with_the_reason(stores):
    jobs, _, owner, _ = stores
    job, _ = jobs.submit(owner, body())
    jobs.claim(job.id, "w1")
    assert jobs.retry_or_fail(job.id, "worker w1 died") is JobStatus.queued
    assert jobs.get(job.id).status is JobStatus.queued
    jobs.claim(job.id, "w2")
    assert jobs.retry_or_fail(job.id, "worker w2 died") is JobStatus.failed  # max_attempts=2
    failed = jobs.get(job.id)
    assert failed.status is JobStatus.failed and "worker w2 died" in failed.error and "2 attempt" in failed.error


def test_a_run_whose_job_was_claimed_again_can_neither_report_nor_finish_it(stores):
    """w1's lease expired and w2 claimed the job again: w1, still running, must not write over w2's run."""
    jobs, _, owner, _ = stores
    job, _ = jobs.submit(owner, body())
    jobs.claim(job.id, "w1")
    first = jobs.get(job.id).attempts
    assert jobs.progress(job.id, 0.1, "value", attempt=first)
    jobs.retry_or_fail(job.id, "lease expired")
    jobs.claim(job.id, "w2")
    second = jobs.get(job.id).attempts
    assert not jobs.progress(job.id, 0.9, "late", attempt=first)
    assert not jobs.finish(job.id, JobStatus.succeeded, result={"stale": True}, attempt=first)
    assert jobs.progress(job.id, 0.5, "value", attempt=second)
    assert jobs.finish(job.id, JobStatus.succeeded, result={"ok": 1}, attempt=second)
    assert jobs.get(job.id).result == {"ok": 1}


def test_cancel_queued_at_once_and_running_on_request(stores):
    jobs, _, owner, _ = stores
    queued, _ = jobs.submit(owner, body())
    assert jobs.cancel(queued.id).status is JobStatus.cancelled
    assert not jobs.claim(queued.id, "w1")
    running, _ = jobs.submit(owner, body())
    jobs.claim(running.id, "w1")
    view = jobs.cancel(running.id)
    assert view.status is JobStatus.running and view.cancel_requested and jobs.cancel_requested(running.id)


def test_expired_leases_are_found(stores):
    jobs, _, owner, _ = stores
    job, _ = jobs.submit(owner, body())
    jobs.claim(job.id, "w1")
    assert job.id not in jobs.expired_leases(60)
    assert job.id in jobs.expired_leases(-1)  # every heartbeat is older than "one second from now"


def test_list_filters_pages_and_owners(stores):
    jobs, _, owner, other = stores
    mine = [jobs.submit(owner, body())[0].id for _ in range(5)]
    jobs.submit(other, body())
    page, cursor = jobs.list(owner, limit=2)
    assert [j.id for j in page] == mine[::-1][:2] and cursor is not None
    seen = [j.id for j in page]
    while cursor is not None:
        page, cursor = jobs.list(owner, cursor=cursor, limit=2)
        seen += [j.id for j in page]
    assert seen == mine[::-1]
    jobs.claim(mine[0], "w")
    assert [j.id for j in jobs.list(owner, status="running")[0]] == [mine[0]]


def test_concurrent_claims_have_one_winner(stores):
    jobs, _, owner, _ = stores
    job, _ = jobs.submit(owner, body())
    wins = []
    threads = [threading.Thread(target=lambda i=i: wins.append(jobs.claim(job.id, f"w{i}"))) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_tokens_are_stored_hashed_and_can_be_revoked(stores):
    jobs, tokens, _, _ = stores
    created = tokens.create(f"ci-{uuid.uuid4().hex[:6]}", admin=True)
    with jobs.engine.connect() as conn:
        stored = conn.execute(text("select token_hash from suture_tokens where id = :i"), {"i": created.id}).scalar()
    assert created.token not in stored and len(stored) == 64
    assert tokens.authenticate(created.token).admin
    tokens.revoke(created.id)
    assert tokens.authenticate(created.token) is None
    assert tokens.authenticate("stk_not-a-token") is None
