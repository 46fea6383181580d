"""The ordered record of every edit applied in a session."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from editor.deltas import WeightDelta
from editor.requests import EditRequest


@dataclass
class LedgerEntry:
    method: str
    hparams: dict[str, Any]
    requests: list[EditRequest]
    deltas: list[WeightDelta]
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: float = field(default_factory=time.time)


class DeltaSummary(BaseModel):
    module: str
    param: str
    rank: int | None
    norm: float


class EditResult(BaseModel):
    """What `Editor.apply` returns: the ledger entry's id and a summary of what changed."""

    id: str
    method: str
    hparams: dict[str, Any]
    requests: list[EditRequest]
    deltas: list[DeltaSummary]
    seconds: float
    details: dict[str, Any] = {}

    @classmethod
    def from_entry(cls, entry: LedgerEntry) -> EditResult:
        return cls(
            id=entry.id, method=entry.method, hparams=entry.hparams, requests=entry.requests,
            deltas=[DeltaSummary(module=d.module, param=d.param, rank=d.rank, norm=d.norm()) for d in entry.deltas],
            seconds=entry.seconds, details=entry.details,
        )
