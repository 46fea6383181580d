"""Head-level interventions: exact changes of one layer's attention output projection W_O.

- head-scale: multiply chosen heads' outputs by a factor (0 ablates) — a dense delta on their W_O columns.
- head-steer: add alpha · d_h to head h's output — a bias delta W_O[:, h] · alpha d_h.
- head-mean-patch: replace head h's output by its mean — zeroed columns plus the bias W_O[:, h] · m_h.
- head-remap: a least-squares map of head h's output, z -> (I + M_h) z, that sends its outputs in a bad context
  to those of a good twin while keeping them on ordinary text — a dense delta on its W_O columns.
- head-tune: the same form of map on heads across layers, fit jointly by gradient on the expected answers
  with the unedited model's distribution kept on chosen prompts — dense deltas on their W_O columns.
"""

from suture.methods.heads.hparams import (
    HeadMeanPatchHParams,
    HeadRemapHParams,
    HeadScaleHParams,
    HeadSteerHParams,
    HeadTuneHParams,
)
from suture.methods.heads.mean_patch import HeadMeanPatch
from suture.methods.heads.remap import HeadRemap, remap_matrix
from suture.methods.heads.scale import HeadScale
from suture.methods.heads.steer import HeadSteer, steering_directions
from suture.methods.heads.tune import HeadTune

__all__ = ["HeadMeanPatch", "HeadMeanPatchHParams", "HeadRemap", "HeadRemapHParams", "HeadScale",
           "HeadScaleHParams", "HeadSteer", "HeadSteerHParams", "HeadTune", "HeadTuneHParams", "remap_matrix",
           "steering_directions"]
