"""The attention output projection of one layer seen head by head, and the exact deltas that change it.

With out = W_O · concat(heads) + b, W_O in (out, in) orientation, head h owns the input columns
h·head_dim … (h+1)·head_dim. Scaling those columns scales the head's contribution; adding W_O[:, h] · v to the
bias is the same as adding v to head h's output at every position. GPT-2's Conv1D stores W_O as (in, out):
deltas are built in (out, in) and written back in the storage layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from suture.editor import EditFailedError, WeightDelta
from suture.editor.handle import ModelHandle
from suture.editor.sites import HeadLayout, linear_weight_as_out_in


@dataclass
class HeadProjection:
    path: str
    module: nn.Module
    layout: HeadLayout
    transposed: bool

    @classmethod
    def of(cls, handle: ModelHandle, layer: int) -> HeadProjection:
        sites = handle.sites
        path = sites.attn_out_path(layer)
        module = handle.model.get_submodule(path)
        layout = sites.head_layout(handle.model.config)
        proj = cls(path=path, module=module, layout=layout, transposed=sites.weights_transposed)
        width = proj.weight_out_in().shape[1]
        if width != layout.n_heads * layout.head_dim:
            raise EditFailedError(f"{path}: input width {width} is not n_heads·head_dim = "
                                  f"{layout.n_heads}·{layout.head_dim}; cannot address heads")
        return proj

    def weight_out_in(self) -> torch.Tensor:
        return linear_weight_as_out_in(self.module.weight, self.transposed)

    def columns(self, head: int) -> slice:
        return slice(head * self.layout.head_dim, (head + 1) * self.layout.head_dim)

    @torch.no_grad()
    def column_delta(self, heads: list[int], factor: float) -> WeightDelta:
        """Dense W' - W where W' has the heads' input columns multiplied by `factor` (0: exactly zero)."""
        weight = self.module.weight.detach()
        delta = torch.zeros_like(weight)
        delta_oi, weight_oi = linear_weight_as_out_in(delta, self.transposed), self.weight_out_in().detach()
        for head in heads:
            cols = self.columns(head)
            delta_oi[:, cols] = weight_oi[:, cols] * factor - weight_oi[:, cols]  # w + (0·w - w) == 0 exactly
        return WeightDelta(module=self.path, param="weight", dense=delta)

    @torch.no_grad()
    def bias_delta(self, vectors: dict[int, torch.Tensor]) -> WeightDelta:
        """Σ_h W_O[:, h] · v_h as a bias change (created as zeros first where the projection has no bias)."""
        weight_oi = self.weight_out_in().detach().double()
        total = torch.zeros(weight_oi.shape[0], dtype=torch.float64, device=weight_oi.device)
        for head, vector in vectors.items():
            total += weight_oi[:, self.columns(head)] @ vector.to(weight_oi.device, torch.float64)
        dtype = torch.promote_types(self.module.weight.dtype, torch.float32)
        return WeightDelta(module=self.path, param="bias", dense=total.to(dtype), create=True)
