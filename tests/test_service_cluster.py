"""A real two-node Ray cluster on loopback: `ray start --head` and `ray start --address` on 127.0.0.1, each
node with its own resources, and `suture serve` joining it through RAY_ADDRESS.

The job runs on the second node (the head's CPU is held by a placeholder actor while the service starts,
so its worker can only be placed there); the second node's raylet is killed mid-job; the job is retried
on the head and succeeds, and its outputs are downloadable from the API.

Storage assumption: every node sees the same artifacts directory and job database path (here one
machine; in Kubernetes a shared volume mounted at the same path on every pod, as deploy/ mounts it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from service_helpers import ADMIN, TINY_HPARAMS, Server, edit_body, save_tiny_model

from suture.service.client import SutureClient
from suture.service.local import free_port


def ours(token: str) -> list[int]:
    """Pids of processes whose command line names our cluster's private temp dir."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if token in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def raylets(token: str) -> set[int]:
    return {p for p in ours(token) if "raylet" in Path(f"/proc/{p}/comm").read_text()}


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def cluster(monkeypatch):
    # Ray 2.5x+ turns on token authentication for `ray start --head`; this loopback cluster opts out.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp = Path(tempfile.mkdtemp(prefix="sut-", dir="/tmp"))  # short: Ray's socket paths must stay short
    token = str(temp)
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    common = ["--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats"]
    try:
        subprocess.run(["ray", "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                        '--resources={"head": 1}', *common], check=True, env=env, capture_output=True, timeout=120)
        head_raylets = raylets(token)
        subprocess.run(["ray", "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                        '--resources={"second": 1}', *common], check=True, env=env, capture_output=True,
                       timeout=120)
        yield {"address": f"127.0.0.1:{port}", "token": token, "head_raylets": head_raylets}
    finally:
        for pid in ours(token):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_job_on_the_second_node_survives_that_nodes_death(cluster, tmp_path):
    import ray

    model_dir = save_tiny_model(tmp_path / "tiny")
    ray.init(address=cluster["address"], namespace=f"test-{uuid.uuid4().hex[:6]}", log_to_driver=False)
    try:
        @ray.remote(num_cpus=1, resources={"head": 1})
        class Hold:
            def ping(self) -> int:
                return os.getpid()

        hold = Hold.remote()
        ray.get(hold.ping.remote(), timeout=120)  # the head's only CPU is taken
        server = Server(tmp_path / "home", model_dir, workers=1,
                        extra_env={"RAY_ADDRESS": cluster["address"], "SUTURE_LEASE_SECONDS": "10"})
        (tmp_path / "home").mkdir()
        server.start(timeout=300)
        ray.kill(hold)  # the head has a free CPU again: where the job is retried
        try:
            with SutureClient(server.url, ADMIN) as client:
                slow = {**TINY_HPARAMS, "objective": {"steps": 60, "early_stop_nll": 0.0}}
                job = client.submit(edit_body(12, hparams=slow, output_name="two-nodes"))
                deadline = time.monotonic() + 180
                while (running := client.job(job["id"]))["status"] != "running":
                    assert time.monotonic() < deadline, running
                    time.sleep(0.2)
                worker_pid = int(running["worker"].rsplit("pid", 1)[1])
                raylet = parent_of(worker_pid)
                assert raylet in raylets(cluster["token"]) and raylet not in cluster["head_raylets"], \
                    "the job does not run on the second node"
                time.sleep(1.0)
                os.kill(raylet, signal.SIGKILL)  # the second node dies mid-job
                done = client.wait(job["id"], timeout=600)
                assert done["status"] == "succeeded", (done["status"], done["error"])
                assert done["attempts"] == 2, done
                retried_on = parent_of(int(done["worker"].rsplit("pid", 1)[1])) if Path(
                    f"/proc/{done['worker'].rsplit('pid', 1)[1]}").exists() else None
                assert retried_on is None or retried_on in cluster["head_raylets"]
                listed = {c["name"]: c for c in client.checkpoints()}
                assert listed["two-nodes"]["has_adapter"]
                unpacked = client.download("two-nodes", tmp_path / "out", part="adapter")
                assert (unpacked / "adapter" / "adapter_config.json").is_file()
                print("two-node cluster:", json.dumps({"first": running["worker"], "retried": done["worker"],
                                                        "attempts": done["attempts"]}))
        finally:
            server.stop()
    finally:
        ray.shutdown()
