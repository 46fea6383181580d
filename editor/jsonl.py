"""Reading JSON Lines files with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from suture.editor.errors import SutureError


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded value) for every non-blank line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SutureError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise SutureError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
