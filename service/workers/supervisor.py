"""The API's side of the worker host: start it, watch it and Ray, restart both when either fails.

- Health at once: the GCS address the host reports is probed with a TCP connect every half second, so a
  killed GCS shows as `ray: "down"` in /healthz within a second, while the API keeps answering.
- Recovery: a host whose Ray is down, or that exited, is killed with its whole process group (the local
  Ray it started lives there) and started again, with a growing pause (1 s to 30 s). Jobs that were
  running come back through their leases (requeued after `lease_seconds`); queued jobs just wait.
- No orphans: the host runs in its own session; its process group id is kept in a pid file, and a
  group left by an API that was SIGKILLed is killed when the next API starts (after checking that it
  is still a worker host of ours).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from suture.service.settings import ServiceSettings
from suture.service.workers.host import SETTINGS_ENV, STATUS_ENV

log = logging.getLogger("suture.supervisor")
HOST_MODULE = "suture.service.workers.host"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _is_our_host(pid: int) -> bool:
    try:
        return HOST_MODULE in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def kill_group(pgid: int, grace: float = 0.0) -> None:
    """SIGTERM (when `grace`), then SIGKILL the process group `pgid`."""
    if grace > 0 and _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def gcs_answers(address: str | None, timeout: float = 0.5) -> bool:
    if not address:
        return False
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class Supervisor:
    def __init__(self, settings: ServiceSettings, state_dir: Path, interval: float = 0.5):
        self.settings, self.interval = settings, interval
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.status_path = state_dir / "worker-host.json"
        self.pid_path = state_dir / "worker-host.pid"
        self.process: subprocess.Popen | None = None
        self.state = "starting"
        self.restarts = 0
        self._status: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="suture-supervisor", daemon=True)
        self._lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self, wait: float = 600) -> None:
        """Start the host and return once its workers are up (or `wait` seconds passed)."""
        self._kill_leftover()
        self._spawn()
        self._thread.start()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.state != "ok":
            if self.process is not None and self.process.poll() is not None and self.restarts == 0:
                raise RuntimeError(f"the worker host exited with {self.process.returncode} while starting")
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            self._terminate(timeout)
        self.pid_path.unlink(missing_ok=True)

    def health(self) -> dict:
        status = self._status if self.state == "ok" else {}
        return {"ray": self.state, "workers": int(status.get("workers") or 0), "busy": int(status.get("busy") or 0),
                "ray_restarts": self.restarts}

    # --- the host process -----------------------------------------------------------------------------------

    def _spawn(self) -> None:
        self.status_path.unlink(missing_ok=True)
        env = {**os.environ, SETTINGS_ENV: self.settings.model_dump_json(), STATUS_ENV: str(self.status_path)}
        self.process = subprocess.Popen([sys.executable, "-m", HOST_MODULE], env=env, start_new_session=True)
        self.pid_path.write_text(str(self.process.pid))
        self._status, self.state = {}, "starting"
        log.info("worker host started (pid %d)", self.process.pid)

    def _terminate(self, grace: float) -> None:
        if self.process is None:
            return
        if grace > 0:
            # SIGINT to the host alone: it stops its dispatcher and shuts down the Ray it started. Signalling
            # the whole group instead left Ray's own processes lingering until the grace ran out (30 s at
            # every stop of the service); what is left of the group afterwards is killed below. (SIGINT, not
            # SIGTERM, which Ray's driver reports on stderr as if it were a crash.)
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        kill_group(self.process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.process = None

    def _kill_leftover(self) -> None:
        """A host group left by an API that died without stopping it (SIGKILL)."""
        try:
            pgid = int(self.pid_path.read_text())
        except (OSError, ValueError):
            return
        if _group_alive(pgid) and _is_our_host(pgid):
            log.warning("killing the worker host group %d left by an earlier API", pgid)
            kill_group(pgid, grace=5)
        self.pid_path.unlink(missing_ok=True)

    # --- watching -------------------------------------------------------------------------------------------

    def _read_status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}

    def _watch(self) -> None:
        pause, failed_at = 1.0, None
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._stop.is_set():
                    return
                exited = self.process is None or self.process.poll() is not None
                status = self._read_status()
                if status.get("ray") == "ok" and not exited:
                    if status.get("gcs_address") is None or gcs_answers(status.get("gcs_address")):
                        self._status, self.state, pause = status, "ok", 1.0
                        continue
                    reason = f"Ray's GCS at {status.get('gcs_address')} does not answer"
                elif exited:
                    reason = "the worker host exited"
                else:
                    continue  # still starting
                if failed_at is None:
                    log.error("%s; restarting the worker host", reason)
                    self.state, failed_at = "down", time.monotonic()
                    self._terminate(grace=0)
                if time.monotonic() - failed_at >= pause:
                    self.restarts += 1
                    pause, failed_at = min(30.0, pause * 2), None
                    self._spawn()
                    self.state = "restarting"
