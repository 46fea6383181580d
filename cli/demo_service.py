"""The last step of `suture demo`: the same kind of edit as a job through the service on the embedded
default (the REST API on loopback, a SQLite job store, a local Ray worker), followed by its progress
events, with its outputs downloaded."""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from suture.cli.common import format_seconds, short


def run_service_demo(model: str, request: dict[str, Any], method: str, hparams: dict[str, Any],
                     keep_failed: bool | None = None) -> bool:
    """Serve, submit one edit job, follow it, download its adapter; True when it succeeded. `keep_failed`
    is the job's: keep an edit whose request fails its verdict (the result then says "partial")."""
    from suture.editor.zoo import zoo_names
    from suture.service.client import SutureClient
    from suture.service.local import local_service
    from suture.service.settings import ServiceSettings

    token = "stk_" + secrets.token_urlsafe(24)
    name = model if model in zoo_names() else "demo-model"
    with tempfile.TemporaryDirectory(prefix="suture-demo-service-") as tmp:
        root = Path(tmp)
        settings = ServiceSettings.from_env(
            database_url=f"sqlite:///{root / 'jobs.db'}", artifacts_dir=root / "artifacts", admin_token=token,
            workers=1, worker_threads=2, models={} if name == model else {name: model})
        started = time.perf_counter()
        with local_service(settings) as url, SutureClient(url, token) as client:
            print(f"  API on {url}, job store {settings.database_url}, a local Ray worker "
                  f"(ready in {format_seconds(time.perf_counter() - started)})")
            body = {"kind": "edit", "model": name, "method": method, "requests": [request], "hparams": hparams}
            if keep_failed is not None:
                body["keep_failed"] = keep_failed
            job = client.submit(body)
            print(f"  POST /v1/jobs -> 202, job {job['id']}; following /v1/jobs/{job['id']}/events")
            last_stage, done = None, job
            for event in client.events(job["id"]):
                if event["stage"] != last_stage:
                    last_stage = event["stage"]
                    print(f"    {event['status']:<9} {100 * event['progress']:5.1f}%  {event['stage']}")
                done = event
            if done["status"] != "succeeded":
                print(f"  the job ended {done['status']}: {done['error']}")
                return False
            seconds = done["result"]["seconds"]
            print(f"  job succeeded: edit {format_seconds(seconds.get('edit', 0))}, "
                  f"total in the worker {format_seconds(seconds['total'])}; files: "
                  f"{short(', '.join(done['result']['files']), 90)}")
            unpacked = client.download(done["output_name"], root / "download", part="adapter")
            print(f"  downloaded the PEFT adapter: {len(list((unpacked / 'adapter').iterdir()))} files")
            return True
