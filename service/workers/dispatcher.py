"""The dispatcher: a background thread that sends queued jobs to idle workers and watches them.

- Routing by model affinity: an idle worker first takes the oldest queued job for a model it has loaded.
- Concurrency is bounded by the pool: one job per worker at a time.
- A worker that dies (RayActorError) is replaced and its job retried, up to the job's attempts.
- Leases: the dispatcher refreshes the heartbeat of the jobs it runs; a running job nobody refreshed for
  `lease_seconds` (its API process died) is requeued by whichever dispatcher notices.
"""

from __future__ import annotations

import logging
import threading
import time

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

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
        slot.job_id, slot.ref = job_id, slot.actor.run.remote(job_id)
        return True
