"""What every benchmark script shares: the data/model/threads options and the start-up checks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="e.g. ../shared/data/counterfact_rome_format_1000.json")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def ready(args: argparse.Namespace) -> bool:
    """The data file exists (the benchmark data lives in ../shared/data); torch uses `--threads`."""
    if not Path(args.data).is_file():
        print(f"data file {args.data} not found (the benchmark data lives in ../shared/data)", file=sys.stderr)
        return False
    import torch

    torch.set_num_threads(args.threads)
    return True
