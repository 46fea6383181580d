"""The REST API (FastAPI): jobs, checkpoints, tokens, health and metrics."""

from suture.service.api.app import create_app

__all__ = ["create_app"]
