"""The dispatcher: a background thread that sends queued jobs to idle workers and watches them.

- Routing by model affinity: an idle worker first takes the oldest queued job for a model it has loaded.
- Concurrency is bounded by the pool: one job per worker at a time.
- A worker that dies (RayActorError) is replaced and its job retried, up to the job's attempts.
- Forced stops: a job asked to cancel, or past its time limit, stops by itself at its next cancellation
  check (within about a second); one that has not stopped `cancel_grace_seconds` later (stuck in a call
  with no check: loading weights, writing a checkpoint) has its actor killed and replaced, its partial
  outputs removed, and is recorded cancelled or failed.
- Leases: the dispatcher refreshes the heartbeat of the jobs it runs; a running job nobody refreshed for
  `lease_seconds` (its API process died) is requeued by whichever dispatcher notices.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from suture.service.jobs.outputs import owner_area
from suture.service.jobs.runner import discard_outputs
from suture.service.schemas import JobStatus
from suture.service.settings import ServiceSettings
from suture.service.store import JobStore
from suture.service.workers.pool import Slot, WorkerPool

log = logging.getLogger("suture.dispatcher")


class Dispatcher:
    def __init__(self, store: JobStore, pool: WorkerPool, settings: ServiceSettings, interval: float = 0.2):
        self.store, self.pool, self.settings, self.interval = store, pool, settings, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="suture-dispatcher", daemon=True)
        self._last_lease_check = 0.0
        self._last_enforce = 0.0

    def start(self) -> None:
        self._requeue_expired()
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def busy(self) -> int:
        return sum(not s.idle for s in self.pool.slots)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._collect()
                self._enforce()
                self._leases()
                self._assign()
            except Exception:  # the loop must outlive any one failure (a database hiccup, say)
                log.exception("dispatcher iteration failed")
                time.sleep(1.0)

    def _collect(self) -> None:
        running = {s.ref: s for s in self.pool.slots if s.ref is not None}
        if not running:
            self._stop.wait(self.interval)
            return
        done, _ = ray.wait(list(running), num_returns=len(running), timeout=self.interval)
        for ref in done:
            slot = running[ref]
            job_id, slot.job_id, slot.ref = slot.job_id, None, None
            try:
                outcome = ray.get(ref, timeout=30)
            except (RayActorError, GetTimeoutError, RayError) as exc:
                reason = f"worker {slot.name} died: {type(exc).__name__}"
                status = self.store.retry_or_fail(job_id, reason)
                log.warning("job %s: %s -> %s", job_id, reason, status)
                self.pool.replace(slot)
                continue
            slot.loaded = set(outcome.get("loaded") or [])
            status = JobStatus(outcome["status"])
            if status is not JobStatus.queued:  # the worker wrote it already; this is the backstop
                self.store.finish(job_id, status, result=outcome.get("result"), error=outcome.get("error"))

    def _enforce(self) -> None:
        """Kill the actor of a job that missed its stop (cancel or time limit) by more than the grace."""
        now = time.monotonic()
        if now - self._last_enforce < 0.5:
            return
        self._last_enforce = now
        running = [s for s in self.pool.slots if s.job_id is not None]
        if not running:
            return
        flagged = self.store.cancel_flags([s.job_id for s in running])
        grace = self.settings.cancel_grace_seconds
        for slot in running:
            if slot.job_id in flagged and slot.cancel_seen is None:
                slot.cancel_seen = now
            cancel_due = slot.cancel_seen is not None and now > slot.cancel_seen + grace
            time_due = now > slot.started + slot.time_limit + grace
            if cancel_due or time_due:
                self.force_stop(slot, cancelled=cancel_due)

    def force_stop(self, slot: Slot, cancelled: bool) -> None:
        job_id, output_name, owner_id, limit = slot.job_id, slot.output_name, slot.owner_id, slot.time_limit
        log.warning("job %s did not stop by itself; killing worker %s", job_id, slot.name)
        slot.job_id = slot.ref = None
        with contextlib.suppress(Exception):
            ray.kill(slot.actor, no_restart=True)
        if cancelled:
            stopped = self.store.finish(job_id, JobStatus.cancelled, error="cancelled on request (stopped by "
                                        f"force: the job did not stop within {self.settings.cancel_grace_seconds:g} s)")
        else:
            stopped = self.store.finish(job_id, JobStatus.failed, error="time limit exceeded: the job ran longer "
                                        f"than {limit:g} s (stopped by force)")
        if stopped and output_name:  # not when the run recorded its success just before the kill
            discard_outputs(owner_area(self.settings.artifacts_dir, owner_id), output_name, job_id)
        self.pool.replace(slot)

    def _leases(self) -> None:
        now = time.monotonic()
        if now - self._last_lease_check < min(5.0, self.settings.lease_seconds / 3):
            return
        self._last_lease_check = now
        self.store.heartbeat([s.job_id for s in self.pool.slots if s.job_id])
        self._requeue_expired()

    def _requeue_expired(self) -> None:
        mine = {s.job_id for s in self.pool.slots}
        for job_id in self.store.expired_leases(self.settings.lease_seconds):
            if job_id not in mine:
                self.store.retry_or_fail(job_id, "its dispatcher stopped answering (lease expired)")

    def _assign(self) -> None:
        idle = [s for s in self.pool.slots if s.idle]
        if not idle:
            return
        queued = self.store.queued(limit=max(50, 4 * len(idle)))
        taken: set[str] = set()
        # First pass: jobs for models a worker already holds; second: the oldest for anyone left.
        for wants_loaded in (True, False):
            for slot in [s for s in idle if s.idle]:
                for job_id, model in queued:
                    if job_id in taken or (wants_loaded and model not in slot.loaded):
                        continue
                    taken.add(job_id)
                    if self._start(slot, job_id):
                        break

    def _start(self, slot: Slot, job_id: str) -> bool:
        if not self.store.claim(job_id, slot.name):
            return False  # another dispatcher claimed it, or it was cancelled meanwhile
        row = self.store.row(job_id)
        asked = (row.spec or {}).get("time_limit") if row is not None else None
        slot.time_limit = min(asked or self.settings.job_time_limit, self.settings.job_time_limit)
        slot.output_name = row.output_name if row is not None else None
        slot.owner_id = row.owner_id if row is not None else 0
        slot.started, slot.cancel_seen = time.monotonic(), None
        slot.job_id, slot.ref = job_id, slot.actor.run.remote(job_id)
        return True
