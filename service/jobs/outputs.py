"""Where a job's outputs live: each token has its own area under the artifacts directory, so output names
are per token (one tenant's names neither collide with nor reveal another's)."""

from __future__ import annotations

import json
from pathlib import Path


def owner_area(artifacts_dir: Path, owner_id: int) -> Path:
    """`<artifacts>/token-<id>/`: the outputs of the token with row id `owner_id`."""
    return artifacts_dir / f"token-{owner_id}"


def output_dir(artifacts_dir: Path, owner_id: int, name: str, job_id: str) -> Path:
    """The directory of output `name` of job `job_id`. Outputs written before names were per token lie
    directly under the artifacts directory; they are found there when their job.json names the job."""
    current = owner_area(artifacts_dir, owner_id) / name
    if current.is_dir():
        return current
    legacy = artifacts_dir / name
    try:
        if json.loads((legacy / "job.json").read_text()).get("job_id") == job_id:
            return legacy
    except (OSError, ValueError):
        pass
    return current
