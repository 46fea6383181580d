"""The mean key μ = E[k] of an MLP output projection's input over ordinary text: the direction every
position's key shares, through which an update ΔW adds one shift, ΔW μ, to every position's MLP output.

Over a sequential MEMIT run that common shift carries about a tenth of each edited layer's output change on
ordinary text and a fifth of the drift KL (BENCHMARKS.md, "What is left of the drift at 500 edits");
methods hold it (MemitHParams.preserve_mean_key) by keeping ΔW μ small in their solve.

Each text's first position is left out: it is the attention sink, whose keys are unlike every other
position's, and a mean it dominated would hold the sink instead of the shift ordinary tokens share. The mean
converges much faster than the d_in x d_in second moment, so it reads only the first `n_texts` texts of the
statistics corpus. Cached on disk like the second moment: base weights, layer, corpus fingerprint, texts,
tokens, dtype.
"""

from __future__ import annotations

import torch

from suture.editor.errors import InvalidHyperparametersError
from suture.editor.handle import ModelHandle
from suture.editor.kv.corpus import CorpusSpec, corpus_fingerprint, load_corpus
from suture.editor.kv.stats import cached_per_layer, key_batches, layer_cache_path

DEFAULT_TEXTS = 200  # ~25,000 positions at 128 tokens: the mean's standard error is ~1% of a key's spread


def _cache_path(handle: ModelHandle, layer: int, corpus_fp: str, spec: CorpusSpec, n_texts: int):
    return layer_cache_path(handle, handle.sites.mlp_out_path(layer),
                            ["mean-nofirst", f"corpus{corpus_fp[:16]}", f"n{n_texts}", f"t{spec.max_tokens}"])


@torch.no_grad()
def _accumulate(handle: ModelHandle, layers: list[int], texts: list[str], max_tokens: int):
    sums: dict[int, torch.Tensor] = {}
    count = 0
    for enc, keys in key_batches(handle, layers, texts, max_tokens):
        mask = enc["attention_mask"].bool()
        first = mask.long().cumsum(1) == 1  # each row's first real token, wherever padding puts it
        later = (~first)[mask]  # aligned with the rows of keys[layer] (real tokens in row order)
        for layer in layers:
            sums[layer] = sums.get(layer, 0) + keys[layer][later].sum(0)
        count += int(later.sum())
    if count == 0:
        raise InvalidHyperparametersError(
            "corpus: the statistics texts have no position after their first token, so no mean key")
    return {layer: (total / count).float() for layer, total in sums.items()}, count


def mean_key(handle: ModelHandle, layers: list[int], spec: CorpusSpec | None = None,
             n_texts: int = DEFAULT_TEXTS) -> dict[int, torch.Tensor]:
    """{layer: μ} with μ [d_in] (float32, the key's units) the mean MLP key over every position but each
    text's first, in the first `n_texts` texts of the statistics corpus; from the disk cache when present.
    Run on the weights the caller wants measured (an editor measures the base weights)."""
    spec = spec or CorpusSpec()
    texts = load_corpus(handle, spec)[:n_texts]
    corpus_fp = corpus_fingerprint(texts)
    return cached_per_layer(
        layers, lambda layer: _cache_path(handle, layer, corpus_fp, spec, len(texts)), "mean", handle.device,
        lambda missing: _accumulate(handle, missing, texts, spec.max_tokens),
        {"texts": str(len(texts)), "corpus_sha256": corpus_fp})
