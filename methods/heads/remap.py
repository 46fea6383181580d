"""head-remap: a context-conditional least-squares change of chosen heads' outputs (MEMIT at head size).

Given pairs of prompts, `undesired` ones where the heads misbehave and `desired` twins showing what they should
output, each chosen head h gets a linear map of its own output, z -> (I + M_h) z, written into its W_O columns
(W_O[:, h] <- W_O[:, h] (I + M_h)). M_h sends the head's last-token outputs on the undesired prompts (U, one
column each) towards its outputs on the twins (D), or past them by a gain g (target U + g (D - U)), while
keeping its outputs on ordinary text, whose second moment over the statistics corpus is C_h, its outputs on
the twins themselves (`keep_desired`) and on any `keep` prompts (K):

    M_h = argmin ‖M U - g (D - U)‖² + ‖M D‖² + ‖M K‖² + ρ n E_C‖M z‖² = g (D - U) Uᵀ (U Uᵀ + D Dᵀ + K Kᵀ + ρ n C_h)⁻¹

g = 1 sends U to D. With g > 1 each head carries more than its own share of the gap between the two
contexts, the share that the heads left untouched would otherwise keep open.

Unlike scaling, it changes the head only in the directions where the bad context differs from ordinary text;
unlike steering, it is zero where the head is silent. Outputs are read on the model as currently edited, so
a repair over several layers applied in depth order fits each layer to what the layers below now produce.
"""

from __future__ import annotations

import torch

from suture.editor import EditContext, EditFailedError, EditRequest, MethodOutput, WeightDelta, register_method
from suture.methods.heads.base import HeadMethod
from suture.methods.heads.capture import head_outputs
from suture.methods.heads.hparams import HeadRemapHParams
from suture.methods.heads.projection import HeadProjection


def remap_matrix(undesired: torch.Tensor, desired: torch.Tensor, mom2: torch.Tensor, preservation: float,
                 keep_desired: bool = True, keep: torch.Tensor | None = None, gain: float = 1.0) -> torch.Tensor:
    """M [hd, hd] for outputs undesired/desired [n, hd], outputs to keep [m, hd] and the head's second moment
    mom2 [hd, hd] (float64); `gain` g is how far along D - U the undesired outputs are sent."""
    u, d = undesired.double().T, desired.double().T
    system = u @ u.T + preservation * u.shape[1] * mom2.double()
    if keep_desired:
        system = system + d @ d.T
    if keep is not None and keep.numel():
        system = system + keep.double().T @ keep.double()
    try:
        return gain * torch.linalg.solve(system, u @ (d - u).T).T  # system is symmetric
    except RuntimeError as exc:
        raise EditFailedError(f"head-remap: the least-squares system is singular ({exc})") from None


@register_method
class HeadRemap(HeadMethod):
    name = "head-remap"
    hparams_model = HeadRemapHParams

    def compute(self, ctx: EditContext, requests: list[EditRequest], hparams: HeadRemapHParams) -> MethodOutput:
        handle = ctx.handle
        proj = HeadProjection.of(handle, hparams.layer)
        undesired = head_outputs(handle, proj, hparams.undesired, "last", hparams.batch_size)  # [n, H, hd]
        desired = head_outputs(handle, proj, hparams.desired, "last", hparams.batch_size)
        keep = head_outputs(handle, proj, hparams.keep, "last", hparams.batch_size) if hparams.keep else None
        mom2 = ctx.second_moment([hparams.layer], hparams.corpus, site="attn_out")[hparams.layer].double()
        weight_oi = proj.weight_out_in().detach()
        delta = torch.zeros_like(proj.module.weight)
        delta_oi = delta.t() if proj.transposed else delta
        fit, kept = {}, {}
        for head in hparams.heads:
            cols = proj.columns(head)
            block = mom2[cols, cols].to(undesired.device)
            matrix = remap_matrix(undesired[:, head], desired[:, head], block, hparams.preservation,
                                  hparams.keep_desired, None if keep is None else keep[:, head], hparams.gain)
            delta_oi[:, cols] = (weight_oi[:, cols].double() @ matrix.to(weight_oi.device)).to(delta.dtype)
            u, d = undesired[:, head].double(), desired[:, head].double()
            # How much of the way to its target the map leaves on the pairs, and how much it moves ordinary text
            # (both relative).
            fit[head] = float((u @ matrix.T - hparams.gain * (d - u)).norm()
                              / (hparams.gain * (u - d).norm()).clamp_min(1e-12))
            kept[head] = float(torch.sqrt(torch.trace(matrix @ block @ matrix.T) / torch.trace(block).clamp_min(1e-30)))
        out = WeightDelta(module=proj.path, param="weight", dense=delta)
        details = {"module": proj.path, "heads": hparams.heads, "preservation": hparams.preservation,
                   "gain": hparams.gain, "pairs": len(hparams.undesired), "gap_left": fit, "ordinary_change": kept,
                   "delta_norm": out.norm()}
        return MethodOutput([out], details)
