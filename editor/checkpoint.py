"""Checkpoints in the `save_pretrained` layout plus a `suture.json` manifest, written atomically.

Parameters the edits created (biases added to bias-free projections) are saved in a form stock transformers
loads: see editor/bias_params.py (the config flag is set and companion parameters are written as zeros, or
the save is refused before anything is written)."""

from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suture.editor.atomic import atomic_directory
from suture.editor.bias_params import StockLayout, loadable_by_stock, stock_layout
from suture.editor.gate import GateDecision

if TYPE_CHECKING:
    from suture.editor.editor import Editor

MANIFEST = "suture.json"


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("suture", "torch", "transformers", "peft", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def manifest_for(editor: Editor, decision: GateDecision | None, layout: StockLayout | None = None
                 ) -> dict[str, Any]:
    return {
        "format": "suture-checkpoint/1",
        "base_model": {"ref": editor.handle.ref, "fingerprint_sha256": editor.handle.base_fingerprint,
                       "model_type": editor.model.config.model_type},
        "edits": editor.ledger_json()["edits"],
        "gate": None if decision is None else decision.model_dump(),
        # Config flags set and zero parameters added so that stock transformers loads created parameters.
        "stock_adaptation": None if layout is None else layout.describe(),
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_checkpoint(editor: Editor, path: Path, decision: GateDecision | None) -> Path:
    """Write into a hidden sibling directory, then rename: a crash never leaves a complete-looking dir."""
    path = Path(path)
    layout = stock_layout(editor.model, editor.handle.sites, editor.weights.created)  # may refuse: nothing written
    with atomic_directory(path) as staging:
        with loadable_by_stock(editor.model, layout):
            editor.model.save_pretrained(staging)
        editor.tokenizer.save_pretrained(staging)
        (staging / MANIFEST).write_text(json.dumps(manifest_for(editor, decision, layout), indent=2))
    return path
