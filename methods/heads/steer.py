"""head-steer: add alpha · d_h to head h's output at every position, as a bias of the output projection.

d_h is given (`directions`) or measured as mean(head h output | desired prompts) - mean(… | undesired prompts),
each read at the prompt's last token on the model as currently edited. Adding v to head h's output adds
W_O[:, h] · v to the projection's output, so the edit is the bias change Σ_h W_O[:, h] · (alpha d_h); a bias is
created (zeros first) on projections that have none.
"""

from __future__ import annotations

import torch

from suture.editor import EditContext, EditRequest, MethodOutput, register_method
from suture.editor.handle import ModelHandle
from suture.methods.heads.base import HeadMethod
from suture.methods.heads.capture import mean_head_outputs
from suture.methods.heads.hparams import HeadSteerHParams
from suture.methods.heads.projection import HeadProjection


def steering_directions(handle: ModelHandle, proj: HeadProjection, hparams: HeadSteerHParams
                        ) -> dict[int, torch.Tensor]:
    """{head: d_h} (float64, before alpha), from `directions` or from the two prompt sets."""
    if hparams.directions is not None:
        found = {h: torch.tensor(d, dtype=torch.float64) for h, d in zip(hparams.heads, hparams.directions)}
    else:
        desired = mean_head_outputs(handle, proj, hparams.desired, "last", hparams.batch_size)
        undesired = mean_head_outputs(handle, proj, hparams.undesired, "last", hparams.batch_size)
        found = {h: (desired[h] - undesired[h]).cpu() for h in hparams.heads}
    if hparams.normalize:
        found = {h: d / d.norm().clamp_min(torch.finfo(torch.float64).tiny) for h, d in found.items()}
    return found


@register_method
class HeadSteer(HeadMethod):
    name = "head-steer"
    hparams_model = HeadSteerHParams

    def check_hparams(self, handle: ModelHandle, hparams: HeadSteerHParams) -> None:
        super().check_hparams(handle, hparams)
        prompts = bool(hparams.desired) or bool(hparams.undesired)
        if hparams.directions is None:
            if not (hparams.desired and hparams.undesired):
                field = "desired" if not hparams.desired else "undesired"
                raise self.fail(field, "give both prompt sets 'desired' and 'undesired' (non-empty), or "
                                "explicit 'directions'")
            return
        if prompts:
            raise self.fail("directions", "give either explicit directions or the prompt sets "
                            "'desired'/'undesired', not both")
        if len(hparams.directions) != len(hparams.heads):
            raise self.fail("directions", f"{len(hparams.directions)} direction(s) for {len(hparams.heads)} "
                            "head(s): give one per entry of 'heads', in the same order")
        head_dim = handle.sites.head_layout(handle.model.config).head_dim
        for i, direction in enumerate(hparams.directions):
            if len(direction) != head_dim:
                raise self.fail(f"directions.{i}", f"has {len(direction)} values, heads have {head_dim} dimensions")

    def compute(self, ctx: EditContext, requests: list[EditRequest], hparams: HeadSteerHParams) -> MethodOutput:
        proj = HeadProjection.of(ctx.handle, hparams.layer)
        directions = steering_directions(ctx.handle, proj, hparams)
        delta = proj.bias_delta({h: hparams.alpha * d for h, d in directions.items()})
        details = {"module": proj.path, "heads": hparams.heads, "alpha": hparams.alpha,
                   "direction_norms": {h: float(d.norm()) for h, d in directions.items()},
                   "delta_norm": delta.norm()}
        return MethodOutput([delta], details, artifacts={"directions": {h: d.float() for h, d in directions.items()}})
