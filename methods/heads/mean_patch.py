"""head-mean-patch: replace head h's output by its mean m_h over reference prompts (mean ablation).

m_h is measured on the model as currently edited, at the projection's input, over every non-padding token of
the reference prompts (`position="all"`, the default, each token weighted equally) or over each prompt's last
token (`position="last"`). The head's W_O columns are zeroed and W_O[:, h] · m_h is added to the bias, so the
projection outputs exactly what it would with m_h in place of the head's output, at every position.
"""

from __future__ import annotations

from suture.editor import EditContext, EditRequest, MethodOutput, register_method
from suture.methods.heads.base import HeadMethod
from suture.methods.heads.capture import mean_head_outputs
from suture.methods.heads.hparams import HeadMeanPatchHParams
from suture.methods.heads.projection import HeadProjection


@register_method
class HeadMeanPatch(HeadMethod):
    name = "head-mean-patch"
    hparams_model = HeadMeanPatchHParams

    def compute(self, ctx: EditContext, requests: list[EditRequest], hparams: HeadMeanPatchHParams) -> MethodOutput:
        proj = HeadProjection.of(ctx.handle, hparams.layer)
        means = mean_head_outputs(ctx.handle, proj, hparams.reference, hparams.position, hparams.batch_size)
        chosen = {h: means[h].cpu() for h in hparams.heads}
        bias = proj.bias_delta(chosen)  # from the columns as they are, before they are zeroed
        weight = proj.column_delta(hparams.heads, 0.0)
        details = {"module": proj.path, "heads": hparams.heads, "position": hparams.position,
                   "mean_norms": {h: float(m.norm()) for h, m in chosen.items()}, "delta_norm": weight.norm()}
        return MethodOutput([weight, bias], details, artifacts={"means": {h: m.float() for h, m in chosen.items()}})
