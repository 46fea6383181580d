"""The search's typed configuration: thresholds shared by every strategy, and the strategy with its own
search space (steer: strengths α; scale: factors; remap: preservation weights ρ, gains, sizes, prompts to keep; tune:
preservation weights ρ, the fit's settings, sizes, prompts to keep)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from suture.repair.remap import RemapStrategy
from suture.repair.scale import ScaleStrategy
from suture.repair.steer import SteerStrategy
from suture.repair.tune import TuneStrategy

RepairStrategy = Annotated[SteerStrategy | ScaleStrategy | RemapStrategy | TuneStrategy, Field(discriminator="kind")]


class RepairConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strategy: RepairStrategy = Field(default_factory=RemapStrategy, description="how chosen heads are changed")
    max_heads: int = Field(16, ge=1, description="largest head set tried")
    target_fixed: float = Field(0.9, ge=0, le=1, description="fraction of failing prompts the repair must fix")
    min_unchanged: float = Field(0.95, ge=0, le=1,
                                 description="fraction of locality prompts whose top-1 must not change")
    extra_sizes: int = Field(2, ge=0, description="set sizes tried past the first that reaches the target")
    batch_size: int = Field(32, ge=1, description="prompts per forward pass")
