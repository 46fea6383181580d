"""The REST API (FastAPI): jobs, checkpoints, tokens, health and metrics."""

from service.api.app import create_app

__all__ = ["create_app"]
