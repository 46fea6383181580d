"""Norm anchors: the typical size of a layer's MLP output on the original model, measured once over
the statistics corpus and cached. Norm-anchored editing (NAS) keeps edited values at this size."""

from __future__ import annotations

import json

import torch

from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import capture_output, hooks, run_until_stopped
from suture.editor.kv.corpus import CorpusSpec, corpus_fingerprint, load_corpus
from suture.editor.paths import cache_dir
from suture.editor.progress import check_cancelled


@torch.no_grad()
def mean_output_norm(handle: ModelHandle, layer: int, spec: CorpusSpec, max_texts: int = 200) -> float:
    """Mean L2 norm of the MLP output projection's output over every token of (up to) `max_texts` texts."""
    texts = load_corpus(handle, spec)[:max_texts]
    site = handle.sites.mlp_out_path(layer)
    name = f"{site}-corpus{corpus_fingerprint(texts)[:16]}-t{spec.max_tokens}-{str(handle.dtype)[6:]}.json"
    path = cache_dir("anchors") / handle.cache_key[:16] / name
    if path.is_file():
        return json.loads(path.read_text())["mean_norm"]
    module = handle.model.get_submodule(site)
    total, count = 0.0, 0
    for start in range(0, len(texts), 16):
        check_cancelled()
        enc = handle.tokenizer(texts[start:start + 16], return_tensors="pt", padding=True, truncation=True,
                               max_length=spec.max_tokens).to(handle.device)
        sink: list[torch.Tensor] = []
        with hooks(capture_output(module, sink, stop=True)):
            run_until_stopped(handle.model, **enc)
        norms = sink[0].float().norm(dim=-1)[enc["attention_mask"].bool()]
        total += float(norms.sum())
        count += norms.numel()
    mean = total / count
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mean_norm": mean, "tokens": count}))
    return mean
