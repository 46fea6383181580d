"""Every float a caller sets (hyperparameters, objectives, thresholds, repair searches) must be a finite
number: NaN compares false with every bound, so a NaN threshold passes any gate and a NaN strength writes
garbage. Pydantic accepts "NaN" and 1e400 (inf) unless a model says otherwise."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel, ValidationError

from suture.editor.kv.output_fisher import FisherSteps
from suture.editor.kv.values import ValueObjective
from suture.evaluation.gate import GatePolicy
from suture.evaluation.health import HealthPolicy, HealthThresholds
from suture.methods.heads.hparams import HeadRemapHParams, HeadScaleHParams, HeadSteerHParams, HeadTuneHParams
from suture.methods.memit.hparams import MemitHParams
from suture.methods.rome.hparams import RomeHParams
from suture.methods.shared.least_squares import NullSpace
from suture.methods.shared.least_write import LeastWrite
from suture.methods.shared.norm_anchor import NormAnchor
from suture.repair.config import RepairConfig
from suture.repair.remap import RemapStrategy
from suture.repair.scale import ScaleStrategy
from suture.repair.steer import SteerStrategy
from suture.repair.tune import TuneStrategy

# The fields each model needs besides the one under test.
REQUIRED: dict[type[BaseModel], dict] = {
    HeadRemapHParams: {"layer": 0, "heads": [0], "undesired": ["a"], "desired": ["b"]},
    HeadScaleHParams: {"layer": 0, "heads": [0]},
    HeadSteerHParams: {"layer": 0, "heads": [0]},
    HeadTuneHParams: {"heads": [(0, 0)], "failing": ["a"], "answers": ["b"]},
}
INPUTS = [ValueObjective, FisherSteps, GatePolicy, HealthThresholds, HealthPolicy, HeadRemapHParams,
          HeadScaleHParams, HeadSteerHParams, HeadTuneHParams, MemitHParams, RomeHParams, NullSpace, LeastWrite,
          NormAnchor, RepairConfig, RemapStrategy, ScaleStrategy, SteerStrategy, TuneStrategy]


def _float_fields():
    for model in INPUTS:
        for name, info in model.model_fields.items():
            text = str(info.annotation)
            if "float" in text:
                yield pytest.param(model, name, text.startswith("list"), id=f"{model.__name__}.{name}")


@pytest.mark.parametrize(("model", "field", "is_list"), list(_float_fields()))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_floats_are_refused_by_name(model, field, is_list, bad):
    value = [[bad]] if model is HeadSteerHParams and field == "directions" else [bad] if is_list else bad
    with pytest.raises(ValidationError) as caught:
        model(**REQUIRED.get(model, {}), **{field: value})
    assert field in str(caught.value)


def test_every_input_model_with_floats_is_covered():
    assert len(list(_float_fields())) >= 40


@pytest.mark.parametrize(("model", "field", "value"), [
    (HeadScaleHParams, "factor", 1e308), (HeadSteerHParams, "alpha", -1e9), (HeadRemapHParams, "gain", 1e6),
    (HeadRemapHParams, "preservation", 1e300), (HeadTuneHParams, "preservation", 1e7)])
def test_head_strengths_that_only_overflow_are_refused(model, field, value):
    with pytest.raises(ValidationError, match=field):
        model(**REQUIRED[model], **{field: value})
