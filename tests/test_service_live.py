"""The service for real: `suture serve` (uvicorn on loopback) with a real local Ray, on a tiny model.

An edit job end to end (progress events, result, checkpoint download that stock transformers loads), a
worker killed mid-job (retried, finished), an API restarted with jobs queued (all finish, on SQLite and
on PostgreSQL), 50 concurrent submissions (all finish), and cancellation of a running job.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from service_helpers import (
    ADMIN,
    Server,
    drop_postgres_database,
    edit_body,
    postgres_database,
    save_tiny_model,
)
from transformers import AutoModelForCausalLM

from suture.service.client import SutureClient


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    running = Server(tmp_path_factory.mktemp("serve-home"), model_dir, workers=2).start()
    yield running
    running.stop()


@pytest.fixture
def client(server):
    with SutureClient(server.url, ADMIN) as c:
        yield c


def wait_all(client: SutureClient, ids: list[str], timeout: float = 600) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [client.job(i) for i in ids]
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
            return jobs
        assert time.monotonic() < deadline, [(j["id"], j["status"], j["stage"]) for j in jobs]
        time.sleep(0.5)


def test_edit_job_end_to_end(client, tmp_path):
    job = client.submit(edit_body(2, save_checkpoint=True, output_name="tiny-fix"))
    events = list(client.events(job["id"]))
    assert events[-1]["status"] == "succeeded", events[-1]
    assert any(e["status"] == "running" for e in events[:-1])
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0
    done = client.job(job["id"])
    assert done["result"]["edits"][0]["requests"] == 2
    assert {"ledger.json", "job.json", "adapter/adapter_model.safetensors", "checkpoint/model.safetensors"} <= set(
        done["result"]["files"])
    listed = {c["name"]: c for c in client.checkpoints()}
    assert listed["tiny-fix"]["has_checkpoint"] and listed["tiny-fix"]["has_adapter"]

    unpacked = client.download("tiny-fix", tmp_path, part="checkpoint")
    model = AutoModelForCausalLM.from_pretrained(unpacked / "checkpoint")
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(model(ids).logits).all()


def test_a_killed_worker_is_replaced_and_the_job_retried(client, server):
    job = client.submit(edit_body(24, hparams={**edit_body()["hparams"], "objective": {"steps": 25,
                                                                                       "early_stop_nll": 0.0}}))
    deadline = time.monotonic() + 300
    while True:
        seen = client.job(job["id"])
        if seen["status"] == "running" and seen["progress"] > 0.1 and seen["worker"]:
            break
        assert seen["status"] in ("queued", "running") and time.monotonic() < deadline, seen
        time.sleep(0.2)
    os.kill(int(seen["worker"].rsplit("pid", 1)[1]), signal.SIGKILL)
    done = client.wait(job["id"], timeout=600)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2 and done["worker"] != seen["worker"]


def test_fifty_concurrent_submissions_all_finish(client):
    with ThreadPoolExecutor(16) as pool:
        jobs = list(pool.map(lambda i: client.submit(edit_body(1), idempotency_key=f"burst-{i}"), range(50)))
    ids = [j["id"] for j in jobs]
    assert len(set(ids)) == 50
    finished = wait_all(client, ids)
    assert [j["status"] for j in finished] == ["succeeded"] * 50


def test_cancel_a_running_job(client):
    slow = {**edit_body()["hparams"], "objective": {"steps": 40, "early_stop_nll": 0.0}}
    job = client.submit(edit_body(40, hparams=slow))
    while client.job(job["id"])["status"] != "running":
        time.sleep(0.1)
    client.cancel(job["id"])
    done = client.wait(job["id"], timeout=300)
    assert done["status"] == "cancelled" and "cancel" in done["error"]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_restarted_api_finishes_every_queued_job(store, tmp_path, model_dir):
    url = postgres_database("suture_live") if store == "postgresql" else None
    try:
        first = Server(tmp_path, model_dir, database_url=url, workers=1).start()
        with SutureClient(first.url, ADMIN) as c:
            ids = [c.submit(edit_body(3))["id"] for _ in range(6)]
            before = [c.job(i)["status"] for i in ids]
        first.stop()  # some ran, one may have been interrupted, the rest are still queued
        assert "queued" in before, before
        second = Server(tmp_path, model_dir, database_url=url, workers=1).start()
        try:
            with SutureClient(second.url, ADMIN) as c:
                finished = wait_all(c, ids)
        finally:
            second.stop()
        assert [j["status"] for j in finished] == ["succeeded"] * 6, finished
    finally:
        if url:
            drop_postgres_database(url)
