"""Installed-looking distributions for registry tests: a dist-info folder with entry points, and a run of
Python that sees it on sys.path (a subprocess, so the test's own registries stay untouched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def install_fake_distribution(root: Path, name: str, entry_points: str) -> None:
    """A distribution as pip leaves it on sys.path: only its metadata, here with entry points."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def run_json(root: Path, script: str) -> dict:
    """Run `script` (which prints one JSON line last) with `root` on sys.path; its parsed output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
