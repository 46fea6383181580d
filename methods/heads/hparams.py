"""Hyperparameters of the head interventions. Heads are QUERY heads as they enter the attention output
projection (n_heads · head_dim input columns, also under grouped-query attention); indices are checked
against the model's head layout when an edit is applied (methods/heads/base.py)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from suture.editor.kv import CorpusSpec

Prompt = Annotated[str, Field(min_length=1)]
# An answer must hold something to predict (whitespace alone would train the bare space token).
Answer = Annotated[str, Field(min_length=1, pattern=r"\S")]
# The strengths a head intervention takes, bounded where a larger value can only overflow a weight or a
# logit (a head's output times 1e308 is inf, and a search judging inf logits would count garbage as fixed).
# The repair search's value lists use the same types, so `suture repair` refuses them before a model loads.
HeadFactor = Annotated[float, Field(ge=-100, le=100)]
SteerStrength = Annotated[float, Field(ge=-1e4, le=1e4)]
RemapPreservation = Annotated[float, Field(gt=0, le=1e6)]
RemapGain = Annotated[float, Field(gt=0, le=100)]
TunePreservation = Annotated[float, Field(ge=0, le=1e6)]
TuneKLWeight = Annotated[float, Field(ge=0, le=1e4)]
TuneRate = Annotated[float, Field(gt=0, le=1.0)]


class HeadsHParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    layer: int = Field(description="block whose attention output projection is changed")
    heads: list[int] = Field(min_length=1, description="query-head indices at the output projection's input")

    @field_validator("heads")
    @classmethod
    def _distinct(cls, heads: list[int]) -> list[int]:
        repeated = sorted(h for h, n in Counter(heads).items() if n > 1)  # linear: `heads` comes from callers
        if repeated:
            raise ValueError(f"head(s) {repeated} listed more than once")
        return heads


class HeadScaleHParams(HeadsHParams):
    factor: HeadFactor = Field(0.0, description="multiplier of the heads' outputs; 0 ablates them")


class HeadSteerHParams(HeadsHParams):
    alpha: SteerStrength = Field(1.0, description="steering strength: alpha · d_h is added to head h's output")
    desired: list[Prompt] = Field(default_factory=list, description="prompts showing the wanted behaviour")
    undesired: list[Prompt] = Field(default_factory=list, description="prompts showing the unwanted behaviour")
    directions: list[list[float]] | None = Field(
        None, description="explicit d_h, one head_dim vector per entry of `heads` (instead of the prompt sets)")
    normalize: bool = Field(False, description="scale each direction to unit norm before multiplying by alpha")
    batch_size: int = Field(16, ge=1, description="prompts per forward pass when measuring directions")


class HeadMeanPatchHParams(HeadsHParams):
    reference: list[Prompt] = Field(min_length=1, description="prompts over which each head's mean output is taken")
    position: Literal["all", "last"] = Field(
        "all", description="'all': mean over every (non-padding) token of the reference prompts, each token "
        "weighted equally; 'last': mean over the last token of each prompt")
    batch_size: int = Field(16, ge=1, description="prompts per forward pass when measuring the means")


class HeadRemapHParams(HeadsHParams):
    undesired: list[Prompt] = Field(min_length=1, description="prompts where the heads misbehave")
    desired: list[Prompt] = Field(
        min_length=1, description="one twin per undesired prompt, in the same order, showing the wanted behaviour")
    preservation: RemapPreservation = Field(
        1.0, description="ρ: weight of keeping the heads' outputs on ordinary text (the statistics corpus), "
        "relative to the undesired/desired pairs; larger changes less")
    gain: RemapGain = Field(
        1.0, description="g: the undesired outputs are sent to U + g (D - U); 1 sends them to the desired "
        "twins' outputs, more overshoots, which a repair with few heads needs to close the whole gap")
    keep_desired: bool = Field(
        True, description="also keep the heads' outputs on the desired twins as they are (the good context is "
        "often closer to what must not change than the statistics corpus is)")
    keep: list[Prompt] = Field(
        default_factory=list, description="more prompts whose last-token head outputs must stay as they are (each "
        "weighs as much as one pair), e.g. prompts like those the repair must not disturb")
    corpus: CorpusSpec = Field(default_factory=CorpusSpec, description="ordinary text whose head outputs are kept")
    batch_size: int = Field(16, ge=1, description="prompts per forward pass when reading head outputs")

    @model_validator(mode="after")
    def _paired(self) -> HeadRemapHParams:
        if len(self.desired) != len(self.undesired):
            raise ValueError(f"'desired' has {len(self.desired)} prompts and 'undesired' {len(self.undesired)}: "
                             "give one desired twin per undesired prompt")
        return self


class HeadTuneHParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    heads: list[tuple[int, int]] = Field(min_length=1, description="(layer, query head) pairs, fit jointly")
    failing: list[Prompt] = Field(min_length=1, description="prompts whose next token is wrong")
    answers: list[Answer] = Field(
        min_length=1, description="one expected answer per failing prompt, in the same order; its first token, "
        "spelled the way the prompt continues (no space after a prompt ending in whitespace or a chat turn's "
        "start), is the target")
    keep: list[Prompt] = Field(
        default_factory=list, description="prompts whose next-token distribution must stay as it is (e.g. the "
        "failing prompts' working twins and prompts like those the repair must not disturb)")
    kl_weight: TuneKLWeight = Field(10.0, description="weight of KL(unedited || edited) on the keep prompts")
    preservation: TunePreservation = Field(
        3.0, description="ρ: weight of the maps' change on ordinary text, Σ_h tr(M_h C_h M_hᵀ) / tr(C_h)")
    steps: int = Field(40, ge=1, le=1000, description="Adam steps")
    lr: TuneRate = Field(0.005, description="Adam learning rate")
    corpus: CorpusSpec = Field(default_factory=CorpusSpec, description="ordinary text whose head outputs give C_h")

    @field_validator("heads")
    @classmethod
    def _distinct_pairs(cls, heads: list[tuple[int, int]]) -> list[tuple[int, int]]:
        repeated = sorted(h for h, n in Counter(heads).items() if n > 1)
        if repeated:
            raise ValueError(f"(layer, head) pair(s) {repeated} listed more than once")
        return heads

    @model_validator(mode="after")
    def _one_answer_each(self) -> HeadTuneHParams:
        if len(self.answers) != len(self.failing):
            raise ValueError(f"'answers' has {len(self.answers)} entries and 'failing' {len(self.failing)}: give "
                             "one expected answer per failing prompt")
        return self
