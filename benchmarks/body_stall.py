"""How long other callers wait while the service takes large job bodies.

    python benchmarks/body_stall.py --bodies 3 --mb 10

Starts the REST app (no workers, no models) under uvicorn on loopback, sends `--bodies` job bodies of about
`--mb` MB at once (a head-steer job with 2 million one-number directions: valid JSON that the job schema
refuses only after parsing and validating it), and meanwhile polls /healthz every 0.1 s. Prints the
health checks' latency (max, median, count) and each big request's status and time. Run it on two
versions of the code to compare them (e.g. one from a `git worktree`, with PYTHONPATH pointing at it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from suture.service.api import create_app
from suture.service.settings import ServiceSettings

ADMIN = "body-stall-admin-token-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bodies", type=int, default=3, help="large bodies sent at once")
    parser.add_argument("--mb", type=float, default=10.0, help="size of each body, MB (under the 10 MB limit)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="body-stall-"))
    app = create_app(ServiceSettings.from_env(database_url=f"sqlite:///{home / 'jobs.db'}",
                                              artifacts_dir=home / "artifacts", dispatch=False, admin_token=ADMIN))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{args.port}"
    while not server.started:
        time.sleep(0.05)
    count = max(1, int(args.mb * 1e6 / 5) - 20)  # "[0], " is 5 bytes
    body = json.dumps({"kind": "repair", "model": "none", "method": "head-steer",
                       "hparams": {"layer": 1, "heads": [0], "directions": [[0]] * count}}).encode()
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    big: list[tuple[int, float]] = []

    def send() -> None:
        started = time.perf_counter()
        response = httpx.post(f"{base}/v1/jobs", content=body, headers=headers, timeout=600)
        big.append((response.status_code, time.perf_counter() - started))

    threads = [threading.Thread(target=send) for _ in range(args.bodies)]
    for thread in threads:
        thread.start()
    latencies = []
    while any(t.is_alive() for t in threads):
        started = time.perf_counter()
        httpx.get(f"{base}/healthz", timeout=600)
        latencies.append(time.perf_counter() - started)
        time.sleep(0.1)
    server.should_exit = True
    print(json.dumps({"body_mb": round(len(body) / 1e6, 2), "bodies": args.bodies,
                      "big": [{"status": s, "seconds": round(t, 2)} for s, t in big],
                      "healthz_max_s": round(max(latencies), 3),
                      "healthz_median_s": round(statistics.median(latencies), 3), "healthz_checks": len(latencies)}))


if __name__ == "__main__":
    main()
