"""The deployment gate as a protocol, so `editor/` can refuse a save without importing `evaluation/`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

if TYPE_CHECKING:
    from suture.editor.editor import Editor


class GateDecision(BaseModel):
    passed: bool
    failures: list[str] = []  # one line per failed threshold: name, measured value, limit
    not_measured: list[str] = []  # default thresholds with nothing to judge (they decided nothing)
    report: dict[str, Any] = {}  # the evaluation the decision was made on, stored in the manifest
    policy: dict[str, Any] = {}


@runtime_checkable
class Gate(Protocol):
    def decide(self, editor: Editor) -> GateDecision:
        """Evaluate the editor's current model and say whether it may be saved."""
        ...
