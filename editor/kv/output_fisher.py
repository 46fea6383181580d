"""How much the model's predictions move when an MLP output moves: the Fisher metric of the output
distribution with respect to one layer's MLP output, averaged over the positions of a corpus.

For a change ε of layer l's MLP output at position t, the KL of every next-token distribution of the text
(that position's and the ones after it) is ½ εᵀ F_t ε to second order, with
F_t = E_y[g gᵀ], g = ∂/∂h_{l,t} Σ_s log p(y_s | y_<s), y sampled from the model itself (the true Fisher,
not the empirical one on the corpus's own tokens). G_l = mean over positions of F_t, [d_model, d_model].

A MEMIT edit writes its residual δ, in proportion to how much each key resembles the subject's, into every
position's MLP output: the drift it causes on ordinary text is about δᵀ G δ. Steepest descent on the value
objective in the metric G (instead of L2) finds a δ that meets the target while moving ordinary text less.
(Amari, "Natural gradient works efficiently in learning", 1998; K-FAC's output-side factor, Martens & Grosse
2015, is the same matrix for one layer.)

Cached on disk like the key statistics: base weights, layer, corpus fingerprint, texts, tokens, seed, dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import hooks
from suture.editor.kv.corpus import CorpusSpec, corpus_fingerprint, load_corpus
from suture.editor.kv.stats import cached_per_layer, layer_cache_path
from suture.editor.progress import check_cancelled

FISHER_BATCH = 8  # texts per forward and backward pass


def _cache_path(handle: ModelHandle, layer: int, corpus_fp: str, spec: CorpusSpec, n_texts: int, seed: int):
    return layer_cache_path(handle, handle.sites.mlp_out_path(layer),
                            ["fisher", f"corpus{corpus_fp[:16]}", f"n{n_texts}", f"t{spec.max_tokens}", f"s{seed}"])


def _add_probe(probes: dict[int, torch.Tensor], layer: int):
    """Forward hook adding a zero that requires grad to the output: its gradient is the output's gradient."""

    def hook(_module, _args, out):
        probes[layer] = torch.zeros(out.shape, device=out.device, dtype=torch.float32, requires_grad=True)
        return out + probes[layer].to(out.dtype)

    return hook


def _accumulate(handle: ModelHandle, layers: list[int], texts: list[str], max_tokens: int, seed: int):
    """{layer: Σ_t g_t g_tᵀ (float64)} and the number of positions, over `texts`."""
    modules = {layer: handle.model.get_submodule(handle.sites.mlp_out_path(layer)) for layer in layers}
    sums: dict[int, torch.Tensor] = {}
    count = 0
    generator = torch.Generator(device=handle.device).manual_seed(seed)
    for start in tqdm(range(0, len(texts), FISHER_BATCH), desc=f"output Fisher, layers {layers}", leave=False):
        check_cancelled()
        enc = handle.tokenizer(texts[start:start + FISHER_BATCH], return_tensors="pt", padding=True,
                               truncation=True, max_length=max_tokens).to(handle.device)
        probes: dict[int, torch.Tensor] = {}
        with hooks(*(modules[layer].register_forward_hook(_add_probe(probes, layer)) for layer in layers)), \
                torch.enable_grad():
            logp = F.log_softmax(handle.model(**enc, use_cache=False).logits.float(), dim=-1)
            sampled = torch.multinomial(logp.detach().exp().flatten(0, 1), 1, generator=generator)
            mask = enc["attention_mask"].bool()
            picked = logp.flatten(0, 1).gather(1, sampled).view(mask.shape)
            grads = torch.autograd.grad(picked[mask].sum(), [probes[layer] for layer in layers])
        for layer, grad in zip(layers, grads, strict=True):
            g = grad[mask].double()
            sums[layer] = sums.get(layer, 0) + g.T @ g
        count += int(mask.sum())
    return sums, count


def output_fisher(handle: ModelHandle, layers: list[int], spec: CorpusSpec | None = None, n_texts: int = 128,
                  seed: int = 0) -> dict[int, torch.Tensor]:
    """{layer: G} with G [d_model, d_model] (float32, nats per squared unit of the MLP output) the mean
    Fisher metric over the first `n_texts` texts of the statistics corpus; from the disk cache when present.
    Run on the weights the caller wants measured (an editor measures the base weights)."""
    spec = spec or CorpusSpec()
    texts = load_corpus(handle, spec)[:n_texts]
    corpus_fp = corpus_fingerprint(texts)

    def compute(missing: list[int]):
        sums, count = _accumulate(handle, missing, texts, spec.max_tokens, seed)
        return {layer: (sums[layer] / count).float() for layer in missing}, count

    return cached_per_layer(
        layers, lambda layer: _cache_path(handle, layer, corpus_fp, spec, len(texts), seed), "fisher",
        handle.device, compute, {"texts": str(len(texts)), "corpus_sha256": corpus_fp})


def natural_step(fisher: torch.Tensor, damping: float) -> torch.Tensor:
    """P = (G + damping · mean eigenvalue · I)⁻¹ [d, d]: a gradient g becomes the step direction P g, steepest
    descent in the metric G + damping·Ḡ·I. damping → ∞ gives back plain (L2) steps; small damping trusts G."""
    d = fisher.shape[0]
    scale = float(torch.trace(fisher)) / d
    eye = torch.eye(d, device=fisher.device, dtype=fisher.dtype)
    return torch.linalg.inv(fisher.double() + damping * scale * eye.double()).to(fisher.dtype)


class FisherSteps(BaseModel):
    """Value steps in the output-Fisher metric of the edited layers (`output_fisher`, `natural_step`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    damping: float = Field(0.1, gt=0, le=1e6, description="weight of the identity, in units of G's mean "
                           "eigenvalue, added to G before it is inverted (large: plain steps)")
    n_texts: int = Field(128, ge=1, le=100_000, description="statistics-corpus texts the metric is averaged over")
