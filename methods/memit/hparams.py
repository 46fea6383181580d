"""MEMIT hyperparameters. Layers default to a window of the family's ROME depth (measured for Llama on
SmolLM2), the value target is set at the window's last layer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from suture.editor.kv import CorpusSpec, TemplateSpec, ValueObjective
from suture.editor.kv.output_fisher import FisherSteps
from suture.methods.rome.hparams import default_layer
from suture.methods.shared.least_squares import NullSpace
from suture.methods.shared.least_write import LeastWrite
from suture.methods.shared.norm_anchor import NormAnchor
from suture.methods.shared.running_covariance import RunningCovariance


class MemitHParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    layers: list[int] = Field(min_length=1, description="blocks whose MLP output projections share the update")
    templates: TemplateSpec = Field(default_factory=lambda: TemplateSpec(groups=[(10, 5)]))
    # Stop once every template's mean target-token NLL is under 0.6 (probability above 0.55: the target
    # leads in every template). This is what was benchmarked: until 2026-11-24 the test divided each
    # template's NLL by the number of templates, so the old setting 0.1 with 6 templates meant 0.6.
    objective: ValueObjective = Field(default_factory=lambda: ValueObjective(lr=1.0, early_stop_nll=0.6))
    corpus: CorpusSpec = Field(default_factory=CorpusSpec)
    # λ scales with the key width: kᵀ(λC)⁻¹k ≈ d_in/λ for a typical key, so λ = d_in makes one layer
    # write about half of its share (MEMIT's 15,000 for GPT-J's 16,384-wide keys is ≈ 0.92 per dimension).
    mom2_weight_per_dim: float = Field(1.0, gt=0, le=1e6,
                                       description="λ / d_in: weight of the preserved-key covariance")
    # Each round over the layers solves again for what is still missing at the top layer, on keys read from
    # the weights the earlier rounds wrote: what a single round leaves unwritten because one layer's write
    # moved the keys of the layers above it, a later round can still write. One by default: at 1,000 facts
    # a second round wrote more (+0.016 efficacy) but lost paraphrase and neighbors (BENCHMARKS.md, "Rounds").
    rounds: int = Field(1, ge=1, le=8, description="passes over the layers, each solving what is still missing")
    # Short values (objective.optimizer="normalized_gradient") just pass the stopping test at the top layer,
    # and one round writes about half of them: a second round makes them hold, at the cost of writing every
    # edit twice. With this, a further round runs only while some request's target is not yet the greedy
    # answer on its rewrite prompt (teacher-forced, every token): write what the edit needs, not more.
    rounds_until_written: bool = Field(
        False, description="with rounds > 1: stop the rounds once every request's target is the greedy answer "
        "on its rewrite prompt, token by token")
    chunk_size: int = Field(32, ge=1, description="requests per value-optimization batch (bounds memory)")
    # Many facts in one call written as sequential edits of a few each: a group's values are optimized on the
    # weights the earlier groups wrote, so they correct for what those did, and with preserve_earlier (or
    # null_space) each solve holds the earlier groups' keys as a sequential run holds earlier edits'. One
    # joint solve of 1,000 facts leaves about half of each target unwritten (BENCHMARKS.md, "The sweep").
    group_size: int | None = Field(
        None, ge=1, le=100_000, description="write the requests in consecutive groups of at most this many, "
        "one after the other (requests sharing a key stay together); None: one group")
    null_space: NullSpace | None = Field(None, description="AlphaEdit-style null-space projection")
    # Sequential editing as recursive least squares: the keys every earlier edit wrote at a layer join that
    # layer's preserved covariance (λC + w·K_pK_pᵀ + KKᵀ), so a later edit's solve also keeps what earlier
    # edits wrote at their own keys, as one joint solve of all of them would; no projection (null_space
    # already carries K_pK_pᵀ, inside its projection).
    preserve_earlier: float | None = Field(
        None, gt=0, le=1e6, description="w: weight of earlier edits' keys K_pK_pᵀ in each layer's solve "
        "(1: each earlier key held as firmly as the edit's own); not with null_space, which carries them")
    # Keys of each subject's last word in generic contexts ("the cars" for "Laurent Cars") held fixed in each
    # layer's solve, so the update reads the subject, not the word (methods/shared/subject_words.py).
    preserve_subject_words: float | None = Field(
        None, gt=0, le=1e6, description="w: weight of the keys of each subject's last word, a common word, in "
        "generic contexts (each word after each generic prefix) in each layer's solve (subjects of two or more "
        "words); the result's details list the words held")
    # Every position's key shares the mean key μ, so ΔW μ is one shift added to every position's MLP output;
    # over a sequential run it carries a fifth of the drift (editor/kv/key_mean.py). λC already holds μ with
    # weight λ (C = Σ + μμᵀ): this adds w·λ·μμᵀ to each layer's solve. Measured with w=10 over 250 sequential
    # edits: no less drift than without (BENCHMARKS.md, "Holding the mean key"); off by default.
    preserve_mean_key: float | None = Field(
        None, gt=0, le=1e6, description="w: extra weight, in units of λ, of the corpus mean key μμᵀ in each "
        "layer's solve, so the update adds less of one shift to every position's output; not with null_space, "
        "whose projection already keeps the update off the covariance's leading directions, where μ lies")
    norm_anchor: NormAnchor | None = Field(None, description="NAS-style norm-anchored values")
    # Edits at lower layers move the keys the upper layers read, so over a long run C₀ no longer describes
    # the text the update meets (methods/shared/running_covariance.py). Measured at 250 sequential edits: the
    # covariance had moved 4-5%, and edits solved against it drift as much as against C₀; off by default.
    running_covariance: RunningCovariance | None = Field(
        None, description="solve against the key covariance of the model as edited so far, C₀ plus its shift "
        "measured on a few corpus texts every few ledger entries; the result's details give the shift")
    # Drift goes with the square of an edit's size, and the solves overshoot what the rewrite prompt needs
    # (methods/shared/least_write.py). Meant for sequential single edits: a batch shares one scale, set by
    # its hardest request, and stays at 1 unless every request is written. Measured with headroom 0.1 on top of
    # orthogonal_to_shared_value: 25% less drift after 500 sequential edits, efficacy 0.962 against 0.980,
    # paraphrase 0.874 against 0.908 (BENCHMARKS.md, "The least write that still takes"); off by default.
    least_write: LeastWrite | None = Field(
        None, description="scale the update down to the least multiple at which every target is still the "
        "greedy answer on its rewrite prompt, times 1 + headroom; the result's details give write_scale")
    # Values share a direction; over many sequential edits it adds up in step (methods/shared/shared_value.py).
    orthogonal_to_shared_value: bool = Field(
        False, description="optimize each value orthogonal to the mean direction of earlier edits' values "
        "(sequential editing; with objective.optimizer 'normalized_gradient')")
    # δ is written, scaled by how much each key resembles the subject's, into every position's MLP output:
    # steps in the metric of how much that moves the model's predictions on ordinary text find a δ that
    # drifts less for the same target (editor/kv/output_fisher.py). Needs objective.optimizer
    # "normalized_gradient".
    value_metric: FisherSteps | None = Field(
        None, description="value steps in the output-Fisher metric of the layers' MLP outputs (mean over "
        "the layers), with objective.optimizer 'normalized_gradient'")


def default_layers(family: str, n_layers: int, width: int = 4) -> list[int]:
    top = max(default_layer(family, n_layers), min(width - 1, n_layers - 1))
    return list(range(max(0, top - width + 1), top + 1))
