"""Helpers of the service tests: a tiny model saved as a local model directory, a real `suture serve`
process on loopback (with its own local Ray), and job bodies that run in seconds on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tiny import tiny_model

from suture.service.local import free_port

ADMIN = "test-admin-token-0123456789"
# Small statistics corpus and templates: a tiny-model ROME edit then takes about a second.
TINY_HPARAMS = {"layer": 1, "corpus": {"n_samples": 40, "max_tokens": 32}, "templates": {"groups": [[5, 2]]},
                "objective": {"steps": 8}}


def save_tiny_model(directory: Path, family: str = "llama") -> Path:
    if not (directory / "config.json").is_file():
        model, tok = tiny_model(family)
        model.save_pretrained(directory)
        tok.save_pretrained(directory)
    return directory


def edit_body(n: int = 1, **extra) -> dict:
    subjects = ["Danielle Darrieux", "France", "Toko Yasuda", "Madrid", "London", "Berlin", "Rome", "Paris"]
    # every request distinct: the same edit twice in one job is refused (issue 14)
    requests = [{"prompt": "The mother tongue of {} is",
                 "subject": subjects[i % len(subjects)] + (f" {i // len(subjects) + 1}" if i >= len(subjects) else ""),
                 "target_new": ["English", "German", "Spanish", "Japanese"][i % 4]} for i in range(n)]
    # A tiny random model cannot learn an edit, so its requests fail their post-edit verdicts; these tests
    # exercise the service, so such edits are kept (keep_failed) unless a test asks for the default rollback.
    return {"kind": "edit", "model": "tiny", "method": "rome", "requests": requests, "hparams": TINY_HPARAMS,
            "keep_failed": True, **extra}


class Server:
    """`suture serve` in a subprocess: start, wait until healthy, stop gracefully or kill."""

    def __init__(self, home: Path, model_dir: Path, database_url: str | None = None, workers: int = 1,
                 extra_env: dict[str, str] | None = None):
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SUTURE_HOME": str(home), "SUTURE_ADMIN_TOKEN": ADMIN,
                    "SUTURE_MODELS": f'{{"tiny": "{model_dir}"}}', "SUTURE_WORKERS": str(workers),
                    "SUTURE_LEASE_SECONDS": "5", "SUTURE_WORKER_THREADS": "1", "RAY_ADDRESS": "",
                    **({"SUTURE_DATABASE_URL": database_url} if database_url else {}), **(extra_env or {})}
        self.process: subprocess.Popen | None = None
        self.log = home / f"serve-{self.port}.log"

    def start(self, timeout: float = 180) -> Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(self.port)], env=self.env,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"suture serve exited: {self.log.read_text()[-3000:]}")
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=2).json()
                if health.get("workers"):
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"suture serve did not become healthy: {self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 60) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def postgres_database(prefix: str) -> str:
    """A new, empty database on the local PostgreSQL server; its URL. Skips the test when there is none."""
    import uuid

    import pytest
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(f"{POSTGRES_SERVER}/test", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_SERVER} ({type(exc).__name__}); "
                    "these tests need a server there (trust authentication, user postgres)")
    return f"{POSTGRES_SERVER}/{name}"


def drop_postgres_database(url: str) -> None:
    from sqlalchemy import create_engine, text

    name = url.rsplit("/", 1)[1]
    admin = create_engine(f"{POSTGRES_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
