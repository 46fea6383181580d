"""The service's cost: one edit job through REST + Ray against the same edit as a direct Python call, and
jobs per minute with 1 and 2 workers.

    python benchmarks/service_overhead.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --repeats 5 --throughput-jobs 12

Latency: the direct side is `editor.apply(request)` on a loaded model; the service side is submit ->
terminal state seen by the client (following the job's events), on a worker that already holds the model
(one warm-up job first), with the same torch threads. The two sides alternate, so load on the machine
hits both alike. The job also writes its outputs (ledger, adapter, manifest); that is part of its cost.
`--compete 1` keeps one CPU-bound process running beside the latency runs (a shared machine), where a
worker left at Ray's nice value (`--worker-nice ray`) loses most of its CPU share to it.

    python benchmarks/service_overhead.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --repeats 3 --throughput-jobs 0 --compete 1
"""

from __future__ import annotations

import contextlib
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import benchmark_parser, json_object, load_editor, ready


def service_settings(root: Path, workers: int, threads: int, nice: int | None = 0):
    from suture.service.settings import ServiceSettings

    return ServiceSettings.from_env(database_url=f"sqlite:///{root / 'jobs.db'}", artifacts_dir=root / "out",
                                    admin_token="stk_" + secrets.token_urlsafe(24), workers=workers,
                                    worker_cpus=1, worker_threads=threads, worker_nice=nice)


@contextlib.contextmanager
def competing(n: int):
    """`n` CPU-bound processes (a busy loop each) for the duration: a machine shared with other work."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def job_body(model: str, request, hparams: dict | None = None) -> dict:
    return {"kind": "edit", "model": model, "method": "rome", "requests": [request.model_dump(mode="json")],
            "hparams": hparams or {}}


def run_job(client, body: dict) -> float:
    started = time.perf_counter()
    job = client.submit(body)
    done = client.wait(job["id"], timeout=1800)
    if done["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {done['status']}: {done['error']}")
    return time.perf_counter() - started


def latency(args, requests) -> dict:
    from suture.service.client import SutureClient
    from suture.service.local import local_service

    editor = load_editor(args)
    hparams = args.hparams
    editor.apply(requests[0], method="rome", **hparams)  # warm: statistics and templates loaded
    editor.revert()
    direct, service = [], []
    with tempfile.TemporaryDirectory() as tmp:
        nice = None if args.worker_nice == "ray" else int(args.worker_nice)
        settings = service_settings(Path(tmp), workers=1, threads=args.threads, nice=nice)
        with local_service(settings) as url, SutureClient(url, settings.admin_token) as client, \
                competing(args.compete):
            run_job(client, job_body(args.model, requests[0], hparams))  # warm: the worker loads the model
            for request in requests[1: args.repeats + 1]:
                started = time.perf_counter()
                editor.apply(request, method="rome", **hparams)
                direct.append(time.perf_counter() - started)
                editor.revert()
                service.append(run_job(client, job_body(args.model, request, hparams)))
                print(f"direct {direct[-1]:.2f} s, service {service[-1]:.2f} s", flush=True)
    d, s = statistics.median(direct), statistics.median(service)
    return {"direct_median_s": d, "service_median_s": s, "overhead_ratio": s / d, "direct": direct,
            "service": service}


def throughput(args, requests, workers: int) -> dict:
    from suture.service.client import SutureClient
    from suture.service.local import local_service

    with tempfile.TemporaryDirectory() as tmp:
        settings = service_settings(Path(tmp), workers=workers, threads=max(1, args.threads // workers))
        with local_service(settings) as url, SutureClient(url, settings.admin_token) as client:
            warm = [client.submit(job_body(args.model, requests[i])) for i in range(workers)]
            for job in warm:
                client.wait(job["id"], timeout=1800)
            started = time.perf_counter()
            ids = [client.submit(job_body(args.model, r))["id"] for r in requests[: args.throughput_jobs]]
            finished = [client.wait(i, timeout=3600) for i in ids]
            seconds = time.perf_counter() - started
    ok = sum(j["status"] == "succeeded" for j in finished)
    return {"workers": workers, "jobs": len(ids), "succeeded": ok, "seconds": seconds,
            "jobs_per_minute": 60 * ok / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--throughput-jobs", type=int, default=12)
    parser.add_argument("--compete", type=int, default=0, help="CPU-bound processes running beside latency")
    parser.add_argument("--worker-nice", default="0", help="the workers' nice value, or 'ray' to keep Ray's")
    parser.add_argument("--hparams", type=json_object, default={},
                        help="JSON overrides of ROME's hyperparameters (latency)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.evaluation import load_counterfact

    requests = load_counterfact(args.data, limit=max(args.repeats + 1, args.throughput_jobs))
    result = {"latency": latency(args, requests)}
    print(json.dumps(result["latency"]), flush=True)
    result["throughput"] = [throughput(args, requests, w) for w in (1, 2) if args.throughput_jobs]
    print(json.dumps(result["throughput"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
