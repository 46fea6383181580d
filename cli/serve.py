"""`suture serve`: the REST API with its job store and Ray workers (embedded default: SQLite + local Ray)."""

from __future__ import annotations

import argparse
import os
import secrets

from suture.cli.common import EXIT_OK, CliError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve", help="run the REST job API (SQLite and a local Ray unless configured otherwise)",
        description="Run the REST job API. Settings come from the environment: SUTURE_DATABASE_URL (default a\n"
                    "SQLite file in SUTURE_HOME), SUTURE_ADMIN_TOKEN, RAY_ADDRESS (default: start a local Ray),\n"
                    "SUTURE_WORKERS, SUTURE_WORKER_CPUS, SUTURE_WORKER_GPUS, SUTURE_MODELS, SUTURE_DATA_DIR,\n"
                    "SUTURE_MAX_ATTEMPTS. See deploy/README.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--workers", type=int, default=None, help="Ray worker actors (default: SUTURE_WORKERS or 1)")
    parser.add_argument("--no-dispatch", action="store_true", help="API only: queue jobs but do not run them")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise CliError(f"--port: {args.port} is not a TCP port")
    import uvicorn

    from suture.service.api import create_app
    from suture.service.settings import ServiceSettings

    overrides: dict = {}
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.no_dispatch:
        overrides["dispatch"] = False
    if not os.environ.get("SUTURE_ADMIN_TOKEN"):
        overrides["admin_token"] = token = "stk_" + secrets.token_urlsafe(32)
        print(f"SUTURE_ADMIN_TOKEN is not set; this run's admin token (stored hashed) is:\n  {token}\n"
              "Set SUTURE_ADMIN_TOKEN to choose a lasting one.", flush=True)
    settings = ServiceSettings.from_env(**overrides)
    print(f"suture serve: http://{args.host}:{args.port} (docs at /docs), store {settings.database_url}, "
          f"{'Ray at ' + settings.ray_address if settings.ray_address else 'a local Ray'}, "
          f"{settings.workers} worker(s)", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=10)
    return EXIT_OK
