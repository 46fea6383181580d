"""The key covariance of the model as edited so far, for long sequential runs (lifelong editing).

MEMIT-style solves hold an update small on C = E[k kᵀ] of the edited layer's keys on ordinary text. C₀ is
measured once, on the unedited model, but edits at lower layers move the keys the upper layers read.
UltraEdit (Gu et al., 2025) keeps running key statistics for this reason. This option solves against
C_t = C₀ + (Ĉ_t - Ĉ₀), where Ĉ_t and Ĉ₀ are the second moments of the first `texts` corpus texts on the
current and on the base weights (with the whole corpus, C_t is the edited model's own covariance). It is
measured again every `every` ledger entries, on the weights as they are when the first edit of that span asks
for it. A session restored in mid-span measures at once, so a resumed run can differ from an uninterrupted
one.

Measured on SmolLM2 (BENCHMARKS.md, "The covariance of the model as edited"), off by default:
- After 250 sequential edits, layers 3-4's covariance had moved 4-5%. Edits solved against it drift as much
  as edits solved against C₀ (paired, 30 records: 1.006).
- With 64 texts, the control variate's difference overstates the shift 2.3 times, and the solves fit the
  sample's noise: 13% more drift.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from suture.editor.context import EditContext
from suture.editor.errors import InvalidHyperparametersError
from suture.editor.kv.corpus import CorpusSpec, load_corpus
from suture.editor.kv.stats import measure_second_moment


class RunningCovariance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every: int = Field(50, ge=1, le=1_000_000, description="ledger entries between two measurements of the "
                       "edited model's keys")
    # 64 texts overstate the shift 2.3 times at 250 sequential edits (the rest is the sample's noise, which the
    # solves then fit: 13% more drift per edit); the whole corpus takes 70 s on 2 cores for SmolLM2's layers
    # 1-4 (BENCHMARKS.md, "The covariance of the model as edited").
    texts: int | None = Field(None, ge=1, le=1_000_000, description="statistics-corpus texts (the first N) the "
                              "shift C_t - C₀ is measured on, at most corpus.n_samples; None: the whole corpus")
    # The solves' ridge λ is set for C₀'s scale (methods/memit/hparams.py): with the keys' energy grown, C_t
    # also holds every update back harder. This keeps C_t's directions at C₀'s total energy.
    keep_trace: bool = Field(False, description="scale C_t to the trace of C₀")


def _psd(matrix: torch.Tensor, floor: float) -> torch.Tensor:
    """`matrix` itself when positive definite; else its eigenvalues clamped at `floor` (a small sample's
    difference can push C₀'s weakest directions below zero)."""
    if int(torch.linalg.cholesky_ex(matrix.double())[1]) == 0:
        return matrix
    values, vectors = torch.linalg.eigh(matrix.double())
    return ((vectors * values.clamp_min(floor)) @ vectors.T).to(matrix.dtype)


def running_second_moment(ctx: EditContext, layers: list[int], corpus: CorpusSpec,
                          spec: RunningCovariance) -> tuple[dict[int, torch.Tensor], dict]:
    """({layer: C_t [d_in, d_in], float32}, details) for the MLP keys of `layers` on the weights as edited,
    measured by the first call in each span of `spec.every` ledger entries; details give the ledger entries
    at the measurement, ‖C_t - C₀‖ / ‖C₀‖ (Frobenius) and tr(C_t) / tr(C₀) (before `keep_trace`) per layer.
    InvalidHyperparametersError if `spec.texts` exceeds the corpus."""
    base = ctx.second_moment(layers, corpus)
    history = ctx.history()
    span = len(history) // spec.every
    # the span, and the entry that opened it: a ledger replaced or reverted past it is measured again
    where = (span, history[span * spec.every - 1].id if span else None)
    key = ("running_second_moment", tuple(layers), corpus.model_dump_json(), spec.texts, spec.keep_trace)
    held = ctx.memo.get(key)
    if held is None or held[0] != where:
        with ctx.weights.base_weights():
            texts = load_corpus(ctx.handle, corpus)
            if spec.texts is not None and spec.texts > len(texts):
                raise InvalidHyperparametersError(
                    f"running_covariance.texts: {spec.texts} exceeds the corpus's {len(texts)} texts")
            whole = spec.texts is None or spec.texts == len(texts)
            texts = texts[:spec.texts]
            sample_key = ("second_moment_sample", tuple(layers), corpus.model_dump_json(), spec.texts)
            if whole:  # Ĉ₀ on the whole corpus is C₀ itself, the same sums
                ctx.memo[sample_key] = base
            elif sample_key not in ctx.memo:  # Ĉ₀: the sample on the base weights, once per session
                ctx.memo[sample_key] = measure_second_moment(ctx.handle, "mlp_out", layers, texts,
                                                             corpus.max_tokens)[0]
        sample_base = ctx.memo[sample_key]
        sample_now = measure_second_moment(ctx.handle, "mlp_out", layers, texts, corpus.max_tokens)[0]
        current, change, trace = {}, {}, {}
        for layer in layers:
            c0 = base[layer]
            floor = 1e-6 * float(c0.diagonal().mean())
            moved = _psd(c0 + (sample_now[layer] - sample_base[layer]), floor).to(c0.dtype)
            trace[layer] = float(moved.trace() / c0.trace())
            current[layer] = moved / trace[layer] if spec.keep_trace else moved
            change[layer] = float(torch.linalg.norm(current[layer] - c0) / torch.linalg.norm(c0))
        held = (where, current, {"entries": len(history), "change": change, "trace": trace})
        ctx.memo[key] = held  # one span per key: the earlier span's tensors are dropped
    return held[1], held[2]
