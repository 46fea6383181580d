"""Norm anchoring (NAS, "Norm Anchors Make Model Edits Last"): keep every written value at the size the
original model's MLP outputs have, so that sequential edits do not inflate the layer's output norms.

The value is v* = v₀ + δ (v₀ the MLP output at the subject before the edit). It is rescaled to the anchor
norm; a value more than `max_ratio` times the anchor is refused or flagged, as configured.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from editor.errors import EditFailedError


class NormAnchor(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
