"""Second-moment statistics C = E[k kᵀ] of a projection's input (the MLP keys, or the concatenated head
outputs entering the attention output projection), streamed over a corpus and cached on disk.

The cache key names everything the numbers depend on: the base weights' fingerprint, the layer and
site, the corpus fingerprint, the number of texts, their token budget and the dtype of the forward
pass. The pass stops at the highest requested layer; sums are kept in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from suture.editor.errors import SutureError
from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import capture_input, hooks, run_until_stopped
from suture.editor.kv.corpus import CorpusSpec, corpus_fingerprint, load_corpus
from suture.editor.paths import cache_dir
from suture.editor.progress import check_cancelled

Site = Literal["mlp_out", "attn_out"]  # whose input: the MLP output projection's, or the attention output's


def _module_path(handle: ModelHandle, site: Site, layer: int) -> str:
    return handle.sites.mlp_out_path(layer) if site == "mlp_out" else handle.sites.attn_out_path(layer)


def layer_cache_path(handle: ModelHandle, module_path: str, tags: list[str]) -> Path:
    """Where a per-layer statistic is cached: under the base weights' fingerprint, a file named by the module,
    `tags` (what the numbers were computed from: kind, corpus fingerprint, sizes, seed) and the dtype."""
    dtype = str(handle.dtype).removeprefix("torch.")
    name = "-".join([module_path.replace(".", "_"), *tags, dtype]) + ".safetensors"
    return cache_dir("stats") / handle.cache_key[:16] / name


def _cache_path(handle: ModelHandle, site: Site, layer: int, corpus_fp: str, spec: CorpusSpec):
    return layer_cache_path(handle, _module_path(handle, site, layer),
                            [f"corpus{corpus_fp[:16]}", f"n{spec.n_samples}", f"t{spec.max_tokens}"])


KEY_BATCH = 16  # texts per forward pass when reading a corpus's keys


@torch.no_grad()
def key_batches(handle: ModelHandle, layers: list[int], texts: list[str], max_tokens: int, site: Site = "mlp_out",
                batch_size: int = KEY_BATCH):
    """Per batch of `texts` (tokenized, truncated to `max_tokens`): (encoding, {layer: keys [real tokens,
    d_in], float64}), the keys of every non-padding token in row order, read on the handle's current weights
    (callers that want the unedited model's keys run it inside `base_weights()`). The pass stops at the top
    layer."""
    modules = {layer: handle.model.get_submodule(_module_path(handle, site, layer)) for layer in layers}
    top = max(layers)
    for start in range(0, len(texts), batch_size):
        check_cancelled()
        enc = handle.tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                               max_length=max_tokens).to(handle.device)
        sinks: dict[int, list] = {layer: [] for layer in layers}
        with hooks(*(capture_input(modules[layer], sinks[layer], stop=layer == top) for layer in layers)):
            run_until_stopped(handle.model, **enc)
        mask = enc["attention_mask"].bool()
        yield enc, {layer: sinks[layer][0][mask].double() for layer in layers}


@torch.no_grad()
def measure_second_moment(handle: ModelHandle, site: Site, layers: list[int], texts: list[str],
                          max_tokens: int) -> tuple[dict[int, torch.Tensor], int]:
    """({layer: C [d_in, d_in], float32}, tokens) with C = E[k kᵀ] over every token of `texts` (truncated to
    `max_tokens`), read on the handle's current weights; sums in float64. Not cached."""
    sums: dict[int, torch.Tensor] = {}
    count = 0
    batches = key_batches(handle, layers, texts, max_tokens, site)
    for _, keys in tqdm(batches, total=-(-len(texts) // KEY_BATCH), desc=f"{site} input statistics, layers {layers}",
                        leave=False):
        for layer in layers:
            sums[layer] = sums.get(layer, 0) + keys[layer].T @ keys[layer]
        count += keys[layers[0]].shape[0]
    dims = max(int(total.shape[0]) for total in sums.values()) if sums else 0
    if count < dims:  # C has rank <= count: every key direction the text never reached goes unregularized
        raise SutureError(f"corpus: {count} token(s) of text give key statistics of rank at most {count}, "
                          f"below the {dims} dimensions of the keys at layer(s) {layers}; the solve would not "
                          f"hold the edit off ordinary text. Give a corpus of at least {dims} tokens (the default "
                          "samples 1,000 texts from the model)")
    return {layer: (total / count).float() for layer, total in sums.items()}, count


def cached_per_layer(layers: list[int], path_of: Callable[[int], Path], name: str, device,
                     compute: Callable[[list[int]], tuple[dict[int, torch.Tensor], int]],
                     metadata: dict[str, str]) -> dict[int, torch.Tensor]:
    """{layer: tensor} read from `path_of(layer)` where cached; the layers not cached are computed together by
    `compute(missing) -> ({layer: tensor}, count)` and written (through a temporary file, so a killed run
    leaves no truncated cache) with `metadata` and the count."""
    result: dict[int, torch.Tensor] = {}
    missing = []
    for layer in layers:
        if path_of(layer).is_file():
            result[layer] = load_file(path_of(layer))[name].to(device)
        else:
            missing.append(layer)
    if missing:
        computed, count = compute(missing)
        for layer, value in computed.items():
            path = path_of(layer)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({name: value.cpu().contiguous()}, str(tmp), metadata={**metadata, "count": str(count)})
            tmp.replace(path)
            result[layer] = value
    return result


def second_moment(handle: ModelHandle, layers: list[int], spec: CorpusSpec | None = None,
                  site: Site = "mlp_out") -> dict[int, torch.Tensor]:
    """{layer: C} with C = E[k kᵀ] over every token of the corpus, loaded from cache when present."""
    spec = spec or CorpusSpec()
    texts = load_corpus(handle, spec)
    corpus_fp = corpus_fingerprint(texts)
    return cached_per_layer(
        layers, lambda layer: _cache_path(handle, site, layer, corpus_fp, spec), "mom2", handle.device,
        lambda missing: measure_second_moment(handle, site, missing, texts, spec.max_tokens),
        {"texts": str(len(texts)), "corpus_sha256": corpus_fp})
