"""The key covariance of the model as edited so far, for long sequential runs (lifelong editing).

MEMIT-style solves hold an update small on C = E[k kᵀ] of the edited layer's keys on ordinary text. C₀ is
measured once, on the unedited model; but edits at lower layers move the keys the upper layers read. After
1,000 sequential SmolLM2 edits the covariance of the window's upper layers had moved 18-20%, and the summed
update wrote 8.6% more energy on ordinary text than the solves, reading C₀, held it to (BENCHMARKS.md, "Is the
covariance stale after many edits?"). UltraEdit (Gu et al., 2025) keeps running key statistics for the same
reason.

A full statistics pass takes minutes, so the shift is measured on a few texts and added to C₀ as a control
variate: C_t = C₀ + Ĉ_t - Ĉ₀, where Ĉ_t and Ĉ₀ are the second moments of the first `texts` corpus texts on the
current and on the base weights. The two share their texts, so the difference carries the edits' shift
without most of a small sample's noise, and C₀'s full-corpus estimate is kept. It is measured again every
`every` ledger entries, on the weights as they are when the first edit of that span asks for it; a session
restored in mid-span measures at once, so a resumed run can differ from an uninterrupted one.
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
    texts: int = Field(64, ge=1, le=1_000_000, description="statistics-corpus texts (the first N) the shift "
                       "C_t - C₀ is measured on; at most corpus.n_samples")
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
            if spec.texts > len(texts):
                raise InvalidHyperparametersError(
                    f"running_covariance.texts: {spec.texts} exceeds the corpus's {len(texts)} texts")
            sample_key = ("second_moment_sample", tuple(layers), corpus.model_dump_json(), spec.texts)
            if sample_key not in ctx.memo:  # Ĉ₀: the sample on the base weights, once per session
                ctx.memo[sample_key] = measure_second_moment(ctx.handle, "mlp_out", layers, texts[:spec.texts],
                                                             corpus.max_tokens)[0]
        sample_base = ctx.memo[sample_key]
        sample_now = measure_second_moment(ctx.handle, "mlp_out", layers, texts[:spec.texts], corpus.max_tokens)[0]
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
