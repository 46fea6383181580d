"""The worker host: a child process of the API that owns the Ray connection, the worker pool and the
dispatcher (`python -m suture.service.workers.host`, started by `supervisor.py`).

Keeping Ray out of the API process means a Ray failure (its GCS killed, a cluster gone) cannot take the API
down: Ray's driver exits or hangs here, and the API's supervisor restarts this process. The host writes
its state to a status file every `STATUS_INTERVAL` seconds; it stops with its parent (PR_SET_PDEATHSIG,
and a parent-pid watch as a backstop), shutting down the Ray it started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

STATUS_INTERVAL = 0.5
SETTINGS_ENV = "SUTURE_HOST_SETTINGS"
STATUS_ENV = "SUTURE_HOST_STATUS"

log = logging.getLogger("suture.host")


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies (no-op elsewhere)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def write_status(path: Path, status: dict) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**status, "pid": os.getpid(), "at": time.time()}))
    tmp.replace(path)


def _probe_address(ray, configured: str | None) -> str | None:
    """host:port whose answering means Ray is up: the GCS, or the Ray Client server for ray:// addresses."""
    if configured and configured.startswith("ray://"):
        return configured.removeprefix("ray://").split("/", 1)[0]
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001  (an address we cannot learn: the host's liveness is then the signal)
        return None


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parent = os.getppid()
    _die_with_parent()
    from suture.service.settings import ServiceSettings
    from suture.service.store import JobStore, make_engine

    settings = ServiceSettings.model_validate_json(os.environ[SETTINGS_ENV])
    status_path = Path(os.environ[STATUS_ENV])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    write_status(status_path, {"ray": "starting", "workers": 0, "busy": 0})

    import ray

    from suture.service.workers.dispatcher import Dispatcher
    from suture.service.workers.pool import WorkerPool

    pool = WorkerPool(settings)
    dispatcher = Dispatcher(JobStore(make_engine(settings.database_url), settings.max_attempts), pool, settings)
    dispatcher.start()
    gcs = _probe_address(ray, settings.ray_address)
    log.info("worker host %d ready: %d worker(s), GCS at %s", os.getpid(), len(pool.slots), gcs)
    try:
        while not stop.is_set():
            write_status(status_path, {"ray": "ok", "gcs_address": gcs, "workers": len(pool.slots),
                                       "busy": dispatcher.busy})
            if os.getppid() != parent:  # the API is gone (PDEATHSIG missed): stop with it
                break
            stop.wait(STATUS_INTERVAL)
    finally:
        write_status(status_path, {"ray": "stopping", "workers": 0, "busy": 0})
        dispatcher.stop()
        pool.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
