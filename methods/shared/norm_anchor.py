"""Norm anchoring (NAS, "Norm Anchors Make Model Edits Last"): keep every written value at a reference size
measured on the original model, so that sequential edits do not inflate the layer's output norms.

The value is v* = v₀ + δ (v₀ the MLP output at the subject before the edit). It is rescaled to the anchor
norm; a value more than `max_ratio` times the anchor is refused or flagged, as configured.

The anchor (`reference`):
- "values" (NAS's): the mean norm of v* that the method itself writes for a fixed set of probe rewrites
  on the original model, the largest `trim` fraction left out. Typical edits keep their size, so efficacy
  is kept; an edit whose value runs away is pulled back to it.
- "outputs": the mean norm of the layer's MLP output over the statistics corpus. Values that rewrite a
  fact need more than an average output, so this anchor shrinks them (half the efficacy on SmolLM2).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from suture.editor import EditContext, EditRequest
from suture.editor.errors import EditFailedError
from suture.editor.paths import cache_dir


class NormAnchor(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    reference: Literal["values", "outputs"] = Field("values", description="what the anchor norm is measured on")
    trim: float = Field(0.05, ge=0, lt=1, description="'values': fraction of the largest probe norms left out")

    max_ratio: float = Field(2.0, gt=0, description="‖v*‖ above max_ratio · anchor is out of bounds")
    on_exceed: Literal["refuse", "flag"] = Field(
        "flag", description="refuse: raise and apply nothing; flag: keep the request, rescaled, and report it")


def anchor_deltas(deltas: torch.Tensor, init_values: torch.Tensor, anchor: float, policy: NormAnchor,
                  labels: list[str]) -> tuple[torch.Tensor, list[dict]]:
    """Residuals δ' with ‖v₀ + δ'‖ = anchor, and one record per request of what happened."""
    values = init_values + deltas
    norms = values.norm(dim=1)
    records = []
    for i, label in enumerate(labels):
        ratio = float(norms[i]) / anchor
        record = {"request": label, "value_norm": float(norms[i]), "anchor": anchor, "ratio": ratio}
        if ratio > policy.max_ratio:
            reason = (f"value norm {float(norms[i]):.3g} is {ratio:.2f}x the anchor {anchor:.3g} "
                      f"(limit {policy.max_ratio}x)")
            if policy.on_exceed == "refuse":
                raise EditFailedError(f"norm anchor refused {label!r}: {reason}")
            record["flagged"] = reason
        records.append(record)
    scaled = values * (anchor / norms.clamp_min(1e-12))[:, None]
    return scaled - init_values, records


# Counterfactual rewrites whose values measure the "values" anchor (any model; no data files needed).
ANCHOR_PROBES: list[EditRequest] = [EditRequest(prompt=p, subject=s, target_new=t) for p, s, t in [
    ("The capital of {} is", "France", "Rome"), ("The capital of {} is", "Japan", "Berlin"),
    ("The mother tongue of {} is", "Danielle Darrieux", "English"), ("{} is located in", "The Eiffel Tower", "London"),
    ("{} was developed by", "Windows", "Apple"), ("The official language of {} is", "Brazil", "German"),
    ("{} plays the", "Toko Yasuda", "piano"), ("{} is a professional", "Lionel Messi", "basketball"),
    ("{} was born in", "Albert Einstein", "Canada"), ("{} works as a", "Barack Obama", "dentist"),
    ("The headquarters of {} is in", "Google", "Paris"), ("{} is owned by", "Instagram", "Toyota"),
    ("{} was written by", "Hamlet", "Tolstoy"), ("{} is a citizen of", "Angela Merkel", "Brazil"),
    ("The currency of {} is the", "Japan", "euro"), ("{} is affiliated with the religion of", "The Pope", "Islam"),
]]


def value_anchor(ctx: EditContext, layer: int, policy: NormAnchor, key: str,
                 solve: Callable[[list[EditRequest]], tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The "values" anchor: trimmed mean ‖v₀ + δ‖ over ANCHOR_PROBES, solved by `solve(requests) -> (v₀, δ)`
    on the base weights, cached per model, layer and `key` (what the method's values depend on)."""
    digest = hashlib.sha256(json.dumps([key, policy.trim, [r.label for r in ANCHOR_PROBES]]).encode()).hexdigest()
    path = cache_dir("anchors") / ctx.handle.cache_key[:16] / f"values-layer{layer}-{digest[:16]}.json"
    if path.is_file():
        return json.loads(path.read_text())["anchor"]
    norms = []
    with ctx.weights.base_weights():
        for start in range(0, len(ANCHOR_PROBES), 8):
            init, delta = solve(ANCHOR_PROBES[start:start + 8])
            norms += (init + delta).norm(dim=1).tolist()
    kept = sorted(norms)[: max(1, len(norms) - int(policy.trim * len(norms)))]
    anchor = sum(kept) / len(kept)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"anchor": anchor, "norms": norms}))
    return anchor


def anchor_norm(ctx: EditContext, layer: int, corpus, policy: NormAnchor, key: str, solve) -> float:
    """The anchor `policy.reference` asks for (see the module docstring)."""
    if policy.reference == "outputs":
        return ctx.anchor_norm(layer, corpus)
    return value_anchor(ctx, layer, policy, key, solve)
