"""Where suture keeps what it computes once: converted models, statistics, corpora."""

from __future__ import annotations

import os
from pathlib import Path


def suture_home() -> Path:
    home = os.environ.get("SUTURE_HOME")
    path = Path(home) if home else Path.home() / ".cache" / "suture"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(kind: str) -> Path:
    path = suture_home() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
