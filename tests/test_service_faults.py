"""Live faults of issue 15 on the real server (`suture serve`, its supervised worker host, a local Ray) with
a tiny model: Ray's GCS killed mid-job, a job cancelled while it samples its statistics corpus, a job over
its time limit, and an API killed with SIGKILL (no processes left behind). The two-node cluster is in
test_service_cluster.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from service_helpers import ADMIN, TINY_HPARAMS, Server, edit_body, save_tiny_model

from suture.service.client import SutureClient

# A statistics corpus that takes the tiny model tens of seconds to sample (thousands of generate steps).
SLOW_CORPUS = {**TINY_HPARAMS, "corpus": {"n_samples": 4000, "max_tokens": 256, "seed": 11}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    running = Server(tmp_path_factory.mktemp("faults-home"), model_dir, workers=1,
                     extra_env={"SUTURE_CANCEL_GRACE_SECONDS": "3"}).start()
    yield running
    running.stop()


@pytest.fixture
def client(server):
    with SutureClient(server.url, ADMIN) as c:
        yield c


def wait_for(predicate, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


def host_group(home: Path) -> int:
    return int((home / "service" / "worker-host.pid").read_text())


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_job_cancelled_while_sampling_its_corpus_stops_within_10_s_and_the_next_runs(client):
    job = client.submit(edit_body(1, hparams=SLOW_CORPUS))
    wait_for(lambda: "statistics" in (client.job(job["id"])["stage"] or ""), 120)
    time.sleep(1.0)  # well inside the sampling (tens of seconds)
    cancelled_at = time.monotonic()
    client.cancel(job["id"])
    done = wait_for(lambda: (j := client.job(job["id"]))["status"] in ("cancelled", "failed", "succeeded") and j, 10)
    stopped_after = time.monotonic() - cancelled_at
    assert done["status"] == "cancelled", done
    assert stopped_after < 10
    print(f"cancel mid corpus sampling: stopped {stopped_after:.2f} s after the request")
    assert not any(p["name"] == job["output_name"] for p in client.checkpoints())
    following = client.wait(client.submit(edit_body(1))["id"], timeout=300)
    assert following["status"] == "succeeded", following


def test_a_job_over_its_time_limit_is_failed_and_the_next_runs(client):
    job = client.submit(edit_body(1, hparams=SLOW_CORPUS, time_limit=4))
    started = time.monotonic()
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "failed" and "time limit" in done["error"], done
    assert time.monotonic() - started < 4 + 30  # the limit, the queue and the model load, not the corpus
    following = client.wait(client.submit(edit_body(1))["id"], timeout=300)
    assert following["status"] == "succeeded", following


def test_killing_rays_gcs_keeps_the_api_up_and_the_jobs_finish(client, server):
    slow = {**TINY_HPARAMS, "objective": {"steps": 60, "early_stop_nll": 0.0}}
    running = client.submit(edit_body(20, hparams=slow))
    queued = [client.submit(edit_body(1))["id"] for _ in range(2)]
    wait_for(lambda: client.job(running["id"])["status"] == "running", 120)
    pgid = host_group(server.home)
    gcs = [p for p in group_pids(pgid) if "gcs_server" in cmdline(p)]
    assert gcs, [cmdline(p)[:80] for p in group_pids(pgid)]
    os.kill(gcs[0], signal.SIGKILL)
    killed_at = time.monotonic()
    health = wait_for(lambda: (h := httpx.get(f"{server.url}/healthz", timeout=2).json())["ray"] != "ok" and h, 5)
    print(f"GCS killed: /healthz said ray={health['ray']} after {time.monotonic() - killed_at:.2f} s")
    assert health["status"] == "ok"  # the API itself is up
    wait_for(lambda: httpx.get(f"{server.url}/healthz", timeout=2).json()["ray"] == "ok", 180, every=0.5)
    finished = [client.wait(i, timeout=400) for i in [running["id"], *queued]]
    assert [j["status"] for j in finished] == ["succeeded"] * 3, [(j["status"], j["error"]) for j in finished]
    assert not group_pids(pgid)  # the old host and its Ray are gone


def test_sigkill_of_the_api_leaves_no_processes_and_a_restart_works(tmp_path, model_dir):
    first = Server(tmp_path, model_dir, workers=1).start()
    pgid = host_group(tmp_path)
    assert group_pids(pgid)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    wait_for(lambda: not group_pids(pgid), 60, every=0.5)
    second = Server(tmp_path, model_dir, workers=1).start()
    try:
        with SutureClient(second.url, ADMIN) as c:
            assert c.wait(c.submit(edit_body(1))["id"], timeout=300)["status"] == "succeeded"
    finally:
        second.stop()
    wait_for(lambda: not group_pids(host_group(tmp_path)) if (tmp_path / "service/worker-host.pid").exists()
             else True, 60, every=0.5)
