"""A pool of Ray worker actors: connect to a cluster (RAY_ADDRESS) or start a local Ray, create the
actors with the configured resources, and replace one that died."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field

import ray

from suture.service.settings import ServiceSettings
from suture.service.workers.actor import EditWorker

log = logging.getLogger("suture.pool")


@dataclass
class Slot:
    """One actor and what the dispatcher knows about it."""

    actor: ray.actor.ActorHandle
    name: str
    loaded: set[str] = field(default_factory=set)
    job_id: str | None = None
    ref: ray.ObjectRef | None = None
    output_name: str | None = None
    owner_id: int = 0
    started: float = 0.0  # time.monotonic() when the job was sent
    time_limit: float = 0.0  # seconds the job may run
    cancel_seen: float | None = None  # when the dispatcher first saw its cancel flag

    @property
    def idle(self) -> bool:
        return self.job_id is None


def _passed_env() -> dict[str, str]:
    """Environment the actors need to find the same caches and settings as the API."""
    names = ("SUTURE_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS")
    return {k: os.environ[k] for k in names if k in os.environ}


class WorkerPool:
    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.started_ray = False
        if not ray.is_initialized():
            if settings.ray_address:
                ray.init(address=settings.ray_address, namespace="suture", log_to_driver=False)
            else:  # the embedded default: a local Ray sized for the pool
                cpus = max(os.cpu_count() or 1, settings.workers * settings.worker_cpus)
                ray.init(num_cpus=cpus, namespace="suture", include_dashboard=False, log_to_driver=False)
                self.started_ray = True
        self._remote = ray.remote(EditWorker).options(
            num_cpus=settings.worker_cpus, num_gpus=settings.worker_gpus, max_restarts=0, max_task_retries=0,
            runtime_env={"env_vars": _passed_env()})
        self.slots = [self._new_slot() for _ in range(settings.workers)]

    def _new_slot(self) -> Slot:
        actor = self._remote.remote(self.settings.model_dump_json())
        identity = ray.get(actor.identity.remote(), timeout=600)
        log.info("worker %s ready (nice %s, %s torch threads)", identity["name"], identity.get("nice"),
                 identity.get("threads"))
        return Slot(actor=actor, name=identity["name"])

    def replace(self, slot: Slot) -> Slot:
        """A fresh actor in place of `slot`, whose actor died or is to be discarded."""
        with contextlib.suppress(Exception):  # already gone
            ray.kill(slot.actor, no_restart=True)
        fresh = self._new_slot()
        self.slots[self.slots.index(slot)] = fresh
        return fresh

    def shutdown(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
        if self.started_ray:
            ray.shutdown()
