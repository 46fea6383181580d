"""Directories that appear complete or not at all: written in a hidden sibling, then renamed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would, for every thread, for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022  # the common default where /proc does not say


def refuse_non_empty(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not empty (or is a file); choose a new output directory")


@contextmanager
def atomic_directory(path: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a staging directory; on success it becomes `path` (with `mode`, default the one the umask gives
    a new directory), on any error it is removed."""
    refuse_non_empty(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    # mkdtemp makes the directory owner-only; what is saved gets the mode any new directory gets (the umask's),
    # so a checkpoint saved for a serving container or another user is readable there. Private outputs (the
    # service's, one tenant's) ask for their mode.
    staging.chmod(0o777 & ~_umask() if mode is None else mode)
    try:
        yield staging
        if path.exists():
            path.rmdir()
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
