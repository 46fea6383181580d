"""Files a job may read: only regular files inside the server's data directories, of a bounded size.

Every refusal reads the same ("not a readable file ... in the server's data directories"), whether the file
is missing, outside the directories, a symlink that leads out, a device, or too large: the answer is no
oracle of what exists elsewhere on the server.
"""

from __future__ import annotations

from pathlib import Path

from suture.editor.errors import InvalidInputError


class FileRefused(InvalidInputError):
    """A path-valued field names no file the job may read; `field` is its dotted name in the request."""

    def __init__(self, field: str, value: str, max_bytes: int):
        self.field = field
        super().__init__(f"{field}: {value!r} is not a readable file of at most {max_bytes} bytes in the server's "
                         "data directories (paths are relative to the data directory, SUTURE_DATA_DIR)")


def data_roots(data_dir: Path | None, allowed_dirs: list[Path]) -> list[Path]:
    """The directories jobs may read from, resolved (symlinks followed), those that exist."""
    roots = []
    for directory in ([data_dir] if data_dir is not None else []) + list(allowed_dirs):
        try:
            resolved = Path(directory).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if resolved.is_dir():
            roots.append(resolved)
    return roots


def confined_file(value: str, field: str, roots: list[Path], max_bytes: int) -> Path:
    """The resolved path of `value` (relative to a root, or absolute inside one).

    Raises:
        FileRefused: missing, outside every root after resolving symlinks, not a regular file, or larger
            than `max_bytes` (one message for all).
    """
    if not value or "\x00" in value or len(value) > 1000:
        raise FileRefused(field, value[:100], max_bytes)
    for root in roots:
        try:
            path = (root / value).resolve(strict=True)
            if path.is_relative_to(root) and path.is_file() and path.stat().st_size <= max_bytes:
                return path
        except (OSError, RuntimeError, ValueError):
            continue
    raise FileRefused(field, value, max_bytes)
