"""Head-level interventions: exact changes of one layer's attention output projection W_O.

- head-scale: multiply chosen heads' outputs by a factor (0 ablates) — a dense delta on their W_O columns.
- head-steer: add alpha · d_h to head h's output — a bias delta W_O[:, h] · alpha d_h.
- head-mean-patch: replace head h's output by its mean — zeroed columns plus the bias W_O[:, h] · m_h.
"""

from methods.heads.hparams import HeadMeanPatchHParams, HeadScaleHParams, HeadSteerHParams
from methods.heads.mean_patch import HeadMeanPatch
from methods.heads.scale import HeadScale
from methods.heads.steer import HeadSteer, steering_directions

__all__ = ["HeadMeanPatch", "HeadMeanPatchHParams", "HeadScale", "HeadScaleHParams", "HeadSteer",
           "HeadSteerHParams", "steering_directions"]
