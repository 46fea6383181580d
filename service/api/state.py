"""What the routes share: settings, stores, the model catalog, metrics; kept on `app.state.suture`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from suture.service.api.metrics import Metrics
from suture.service.jobs import ModelCatalog
from suture.service.settings import ServiceSettings
from suture.service.store import JobStore, TokenStore


@dataclass
class ServiceState:
    settings: ServiceSettings
    jobs: JobStore
    tokens: TokenStore
    catalog: ModelCatalog
    metrics: Metrics
    supervisor: object | None = None  # service.workers.supervisor.Supervisor when this replica runs jobs

    def workers_health(self) -> dict:
        """{ray, workers, busy, ray_restarts}: the worker host's state, or "off" for an API-only replica."""
        if self.supervisor is None:
            return {"ray": "off", "workers": 0, "busy": 0}
        return self.supervisor.health()


def state(request: Request) -> ServiceState:
    return request.app.state.suture
