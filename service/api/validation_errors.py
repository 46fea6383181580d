"""422 errors of a bounded size, whatever was sent.

A 422 names each error's field and reason; it echoes what was sent only when that is short. Echoing a
10 MB body (twice, with a ValueError's text in ctx as well) made a 30 MB answer to one bad request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ECHO_CHARS = 200
MAX_ERRORS = 20


def _short(value: Any) -> bool:
    """Whether `value`'s repr is at most ECHO_CHARS, without building the repr of a large container."""
    if isinstance(value, str | bytes):
        return len(value) <= ECHO_CHARS
    if isinstance(value, list | tuple | dict | set) and len(value) > ECHO_CHARS // 2:
        return False  # each entry takes at least two characters
    return len(repr(value)) <= ECHO_CHARS


def bounded_errors(errors: Sequence[dict]) -> list[dict]:
    """The first MAX_ERRORS errors (then a count), each input echoed only if short, and a ValueError's text
    given once (as msg, not again in ctx)."""
    bounded = []
    for error in errors[:MAX_ERRORS]:
        error = dict(error)
        if "input" in error and not _short(error["input"]):
            value = error["input"]
            size = f" of {len(value)}" if hasattr(value, "__len__") else ""
            error["input"] = f"<{type(value).__name__}{size}, not echoed>"
        if isinstance(error.get("ctx"), dict) and "error" in error["ctx"]:
            error["ctx"] = {k: v for k, v in error["ctx"].items() if k != "error"}
        bounded.append(error)
    if len(errors) > MAX_ERRORS:
        bounded.append({"loc": ["body"], "msg": f"and {len(errors) - MAX_ERRORS} more error(s)", "type": "too_many"})
    return bounded
