"""A Python client of the REST API: submit jobs, follow their progress, wait, download outputs.

    client = SutureClient("http://127.0.0.1:8000", token)
    job = client.submit({"kind": "edit", "model": "smollm2-135m", "method": "rome", "requests": [...]})
    done = client.wait(job["id"], on_progress=lambda j: print(j["progress"], j["stage"]))
    client.download(done["output_name"], "out/", part="adapter")
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


class ServiceError(Exception):
    """The service answered with an error status; `status` and `detail` say which and why."""

    def __init__(self, status: int, detail: Any):
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {detail}")


class SutureClient:
    def __init__(self, base_url: str, token: str, timeout: float = 60.0):
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SutureClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ServiceError(response.status_code, detail)
        return response.json()

    # --- jobs ---------------------------------------------------------------------------------------------

    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json(self.http.post("/v1/jobs", json=body, headers=headers))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.get(f"/v1/jobs/{job_id}"))

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        """Every job visible to the token matching `filters` (status, kind, model), following pages."""
        out, cursor = [], None
        while True:
            params = {k: v for k, v in {**filters, "cursor": cursor, "limit": 200}.items() if v is not None}
            page = self._json(self.http.get("/v1/jobs", params=params))
            out += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return out

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.post(f"/v1/jobs/{job_id}/cancel"))

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's server-sent events, as job documents, until it ends."""
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[6:])

    def wait(self, job_id: str, timeout: float | None = None,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Follow the job's events until it ends; falls back to polling if the stream breaks."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for job in self.events(job_id):
                if on_progress:
                    on_progress(job)
                if job["status"] in TERMINAL:
                    return job
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
        except httpx.TransportError:
            pass
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(0.5)

    # --- outputs ------------------------------------------------------------------------------------------

    def checkpoints(self) -> list[dict[str, Any]]:
        return self._json(self.http.get("/v1/checkpoints"))

    def download(self, name: str, dest: str | Path, part: str = "all") -> Path:
        """Fetch a job's outputs (`part`: all, checkpoint or adapter) and unpack them under `dest/name`."""
        response = self.http.get(f"/v1/checkpoints/{name}/archive", params={"part": part}, timeout=None)
        if response.status_code >= 400:
            self._json(response)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
        return dest / name
