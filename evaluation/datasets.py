"""Loading edit cases from benchmark files."""

from __future__ import annotations

import json
from pathlib import Path

from editor.errors import SutureError
from editor.requests import EditRequest, from_counterfact


def load_counterfact(path: str | Path, limit: int | None = None, offset: int = 0) -> list[EditRequest]:
    """CounterFact records in the ROME schema (a JSON list) as edit requests."""
    path = Path(path)
    if not path.is_file():
        raise SutureError(f"CounterFact file {path} does not exist")
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise SutureError(f"{path}: expected a JSON list of CounterFact records")
    end = None if limit is None else offset + limit
    return [from_counterfact(r, offset + i) for i, r in enumerate(records[offset:end])]
