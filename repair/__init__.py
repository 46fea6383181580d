"""Minimal-repair search: find the fewest attention heads whose change repairs a family of failing prompts
within a locality budget. It drives an `Editor` from above (as evaluation does) through the head methods
of `suture.methods.heads`; strategies (steer, scale, remap, tune) share one typed configuration."""

from suture.repair.config import RepairConfig, RepairStrategy
from suture.repair.remap import RemapStrategy
from suture.repair.scale import ScaleStrategy
from suture.repair.search import rank_heads, search_repair
from suture.repair.steer import SteerStrategy
from suture.repair.trials import LocalityProbe, answer_tokens, apply_plan, fixed_fraction, plan_applied
from suture.repair.tune import TuneStrategy
from suture.repair.types import (
    RemapPlan,
    RepairPlan,
    RepairPoint,
    RepairResult,
    ScalePlan,
    SteerPlan,
    TunePlan,
    parse_plan,
)

__all__ = [
    "LocalityProbe", "RemapPlan", "RemapStrategy", "RepairConfig", "RepairPlan", "RepairPoint", "RepairResult",
    "RepairStrategy", "ScalePlan", "ScaleStrategy", "SteerPlan", "SteerStrategy", "TunePlan", "TuneStrategy",
    "answer_tokens", "apply_plan",
    "fixed_fraction", "parse_plan", "plan_applied", "rank_heads", "search_repair",
]
