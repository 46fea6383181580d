"""head-scale: multiply chosen heads' outputs by a factor (0 ablates them) by scaling their W_O columns."""

from __future__ import annotations

from suture.editor import EditContext, EditRequest, MethodOutput, register_method
from suture.methods.heads.base import HeadMethod
from suture.methods.heads.hparams import HeadScaleHParams
from suture.methods.heads.projection import HeadProjection


@register_method
class HeadScale(HeadMethod):
    name = "head-scale"
    hparams_model = HeadScaleHParams

    def compute(self, ctx: EditContext, requests: list[EditRequest], hparams: HeadScaleHParams) -> MethodOutput:
        proj = HeadProjection.of(ctx.handle, hparams.layer)
        delta = proj.column_delta(hparams.heads, hparams.factor)
        return MethodOutput([delta], {"module": proj.path, "heads": hparams.heads, "factor": hparams.factor,
                                      "delta_norm": delta.norm()})
