"""Service workers run at their configured nice value and thread count, whatever Ray started them at."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from suture.service.settings import ServiceSettings

PRIORITY = Path(__file__).parents[1] / "service" / "workers" / "priority.py"
# The module is loaded on its own: at nice 15 on a busy machine, importing the service package (Ray)
# before the reset takes minutes, which is the very effect being fixed.
CHILD = """
import importlib.util, os, sys, threading
spec = importlib.util.spec_from_file_location("priority", sys.argv[1])
priority = importlib.util.module_from_spec(spec)
spec.loader.exec_module(priority)
started = threading.Event()
stop = threading.Event()
def idle():
    started.set()
    stop.wait()
worker = threading.Thread(target=idle)
worker.start()
started.wait()
before = os.getpriority(os.PRIO_PROCESS, worker.native_id)
state = priority.run_at_priority(0, 2)
after = os.getpriority(os.PRIO_PROCESS, worker.native_id)
stop.set()
print(before, after, state["nice"], state["threads"])
"""


@pytest.mark.skipif(not hasattr(os, "setpriority") or os.geteuid() != 0, reason="lowering nice needs root")
def test_niced_process_and_its_running_threads_return_to_normal_priority():
    # `nice -n 15` as Ray does for its workers; the thread started before the call is reset too
    command = ["nice", "-n", "15", sys.executable, "-c", CHILD, str(PRIORITY)]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    before, after, nice, threads = map(int, out.stdout.split())
    assert (before, after, nice, threads) == (15, 0, 0, 2)


def test_worker_nice_is_configurable_and_bounded(monkeypatch, tmp_path):
    base = {"database_url": f"sqlite:///{tmp_path / 'jobs.db'}", "artifacts_dir": tmp_path}
    assert ServiceSettings(**base).worker_nice == 0
    monkeypatch.setenv("SUTURE_WORKER_NICE", "5")
    assert ServiceSettings.from_env(**base).worker_nice == 5
    with pytest.raises(ValueError, match="worker_nice"):
        ServiceSettings(**base, worker_nice=40)
