"""head-tune: per-head maps of chosen heads' outputs, z -> (I + M_h) z written into their W_O columns (the form
of head-remap), fit jointly by gradient on the behaviour instead of on the twins' outputs:

    loss = CE(answer | failing prompt)                                mean over failing prompts, last token
         + kl_weight · KL(p_unedited || p_edited)                     mean over keep prompts, last token
         + ρ · Σ_h tr(M_h C_h M_hᵀ) / tr(C_h)                         the maps' change on ordinary text

C_h is head h's output second moment over the statistics corpus (as in head-remap). A least-squares remap sends
each head to its twin's output and so closes only that head's share of the gap between the two contexts; fit
jointly on the answer, a few heads can carry the whole repair (BENCHMARKS.md, "Head repair"). The idea of
tuning chosen heads' outputs on the task is LoFiT's (Yin et al., 2024, "LoFiT: Localized Fine-tuning on LLM
Representations", which learns a bias per head); a map instead of a bias is zero where the head is silent, and
the two preservation terms keep what the repair must not change.

The fit runs each prompt's last token only, over a KV cache of its unedited prefix computed once, so a step
costs one token per prompt; the written edit applies the maps at every position. The repair search
(suture.repair) judges the edit itself on the real edited model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from suture.editor import EditContext, EditRequest, InvalidRequestError, MethodOutput, WeightDelta, register_method
from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import hooks
from suture.editor.kv.incremental import cache_of, with_cache
from suture.editor.kv.tokens import answer_token_ids
from suture.editor.lengths import context_length
from suture.editor.progress import check_cancelled
from suture.methods.heads.base import HeadMethod
from suture.methods.heads.hparams import HeadTuneHParams
from suture.methods.heads.projection import HeadProjection

# The fit keeps the unedited prefix's KV cache of every failing and keep prompt (SmolLM2: about 46 KB a token).
MAX_CACHED_TOKENS = 32768


class _LastTokens:
    """Prompts encoded left-padded, with the unedited model's KV cache of everything but their last token."""

    def __init__(self, handle: ModelHandle, prompts: list[str]):
        enc = handle.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(handle.device)
        self.handle, self.ids, self.mask = handle, enc["input_ids"], enc["attention_mask"]
        self.positions = (self.mask.cumsum(1) - 1).clamp_min(0)
        with torch.no_grad():
            out = handle.model(input_ids=self.ids[:, :-1], attention_mask=self.mask[:, :-1],
                               position_ids=self.positions[:, :-1], use_cache=True, logits_to_keep=1)
        self.cache = cache_of(out)

    def logits(self) -> torch.Tensor:
        """[prompts, vocab] next-token logits after the last token (float32), on the model as hooked now."""
        out = self.handle.model(input_ids=self.ids[:, -1:], attention_mask=self.mask,
                                position_ids=self.positions[:, -1:],
                                **with_cache(self.handle.model, copy.deepcopy(self.cache)))
        return out.logits[:, -1].float()


def _map_hook(layer: int, maps: dict[tuple[int, int], torch.Tensor], n_heads: int, head_dim: int):
    """Forward pre-hook of layer's output projection: head h's input z becomes z + z M_hᵀ."""
    mine = [(head, m) for (lay, head), m in maps.items() if lay == layer]

    def remap(_module, args):
        x = args[0]
        z = x.reshape(*x.shape[:-1], n_heads, head_dim)
        add = torch.zeros_like(z)
        for head, m in mine:
            add[..., head, :] = z[..., head, :] @ m.T.to(z.dtype)
        return ((z + add).reshape(x.shape), *args[1:])

    return remap


@register_method
class HeadTune(HeadMethod):
    name = "head-tune"
    hparams_model = HeadTuneHParams

    def check_hparams(self, handle: ModelHandle, hparams: HeadTuneHParams) -> None:
        n_heads = handle.sites.head_layout(handle.model.config).n_heads
        bad = [(layer, head) for layer, head in hparams.heads
               if not (0 <= layer < handle.n_layers and 0 <= head < n_heads)]
        if bad:
            raise self.fail("heads", f"{bad} outside layers 0..{handle.n_layers - 1} and heads 0..{n_heads - 1}")
        tok = handle.tokenizer
        self._check_lengths(handle, hparams)
        try:
            answer_token_ids(tok, hparams.failing, hparams.answers)
        except InvalidRequestError as exc:
            raise self.fail("answers", str(exc)) from None

    def _check_lengths(self, handle: ModelHandle, hparams: HeadTuneHParams) -> None:
        """Every prompt at least 2 tokens and within the context; the KV caches within MAX_CACHED_TOKENS."""
        tok, limit, total = handle.tokenizer, context_length(handle.model.config), 0
        for field in ("failing", "keep"):
            prompts = getattr(hparams, field)
            lengths = [len(ids) for ids in tok(prompts)["input_ids"]] if prompts else []
            short = [p for p, n in zip(prompts, lengths) if n < 2]
            if short:
                raise self.fail(field, f"{short[:3]} tokenize to fewer than 2 tokens; the fit runs each prompt's "
                                "last token over the tokens before it")
            long = [(i, n) for i, n in enumerate(lengths) if limit is not None and n > limit]
            if long:
                raise self.fail(field, f"prompt {long[0][0]} is {long[0][1]} tokens, longer than the model's "
                                f"context of {limit}")
            total += max(lengths, default=0) * len(lengths)  # left-padded batches: every row as long as the longest
        if total > MAX_CACHED_TOKENS:
            raise self.fail("failing", f"failing and keep prompts pad to {total} tokens; the fit keeps a KV cache "
                            f"of every prompt, at most {MAX_CACHED_TOKENS} tokens in all (fewer or shorter prompts)")

    def compute(self, ctx: EditContext, requests: list[EditRequest], hparams: HeadTuneHParams) -> MethodOutput:
        handle = ctx.handle
        layers = sorted({layer for layer, _ in hparams.heads})
        projs = {layer: HeadProjection.of(handle, layer) for layer in layers}
        layout = projs[layers[0]].layout
        mom2 = ctx.second_moment(layers, hparams.corpus, site="attn_out")
        blocks = {(layer, head): mom2[layer][projs[layer].columns(head), projs[layer].columns(head)].float()
                  for layer, head in hparams.heads}
        maps, history = self._fit(handle, projs, layout.n_heads, layout.head_dim, blocks, hparams, ctx)
        deltas = []
        for layer in layers:
            proj = projs[layer]
            weight_oi = proj.weight_out_in().detach()
            delta = torch.zeros_like(proj.module.weight)
            delta_oi = delta.t() if proj.transposed else delta
            for (lay, head), m in maps.items():
                if lay == layer:
                    cols = proj.columns(head)
                    change = weight_oi[:, cols].double() @ m.double().to(weight_oi.device)
                    delta_oi[:, cols] = change.to(delta.dtype)
            deltas.append(WeightDelta(module=proj.path, param="weight", dense=delta))
        ordinary = {f"{layer}.{head}": float(torch.sqrt(torch.trace(m @ blocks[(layer, head)] @ m.T)
                                                        / torch.trace(blocks[(layer, head)]).clamp_min(1e-30)))
                    for (layer, head), m in maps.items()}
        details = {"heads": [list(h) for h in hparams.heads], "modules": [projs[layer].path for layer in layers],
                   "preservation": hparams.preservation, "kl_weight": hparams.kl_weight, "steps": hparams.steps,
                   "first": history[0], "last": history[-1], "ordinary_change": ordinary,
                   "delta_norm": sum(d.norm() for d in deltas)}
        return MethodOutput(deltas, details)

    def _fit(self, handle, projs, n_heads, head_dim, blocks, hparams: HeadTuneHParams, ctx: EditContext):
        """{(layer, head): M_h [head_dim, head_dim]} (float32) and the loss terms at the first and last step."""
        device = handle.device
        failing = _LastTokens(handle, hparams.failing)
        right = torch.tensor(answer_token_ids(handle.tokenizer, hparams.failing, hparams.answers), device=device)
        keep = _LastTokens(handle, hparams.keep) if hparams.keep else None
        base = torch.log_softmax(keep.logits().detach(), -1) if keep is not None else None
        maps = {h: torch.zeros(head_dim, head_dim, device=device, requires_grad=True) for h in hparams.heads}
        optimizer = torch.optim.Adam(list(maps.values()), lr=hparams.lr)
        history = []
        for step in range(hparams.steps + 1):
            check_cancelled()
            with hooks(*(proj.module.register_forward_pre_hook(_map_hook(layer, maps, n_heads, head_dim))
                         for layer, proj in projs.items())):
                ce = F.cross_entropy(failing.logits(), right)
                kl = torch.zeros((), device=device)
                if keep is not None:
                    now = torch.log_softmax(keep.logits(), -1)
                    kl = (base.exp() * (base - now)).sum(-1).mean()
            change = sum(torch.trace(m @ blocks[h].to(device) @ m.T) / torch.trace(blocks[h]).clamp_min(1e-30)
                         for h, m in maps.items())
            loss = ce + hparams.kl_weight * kl + hparams.preservation * change
            if not torch.isfinite(loss):
                raise self.fail("lr", f"the fit's loss became {float(loss)} at step {step} (lr {hparams.lr}, "
                                    f"kl_weight {hparams.kl_weight}, preservation {hparams.preservation}): "
                                    "lower them")
            if step in (0, hparams.steps):
                history.append({"loss": float(loss.detach()), "cross_entropy": float(ce.detach()),
                                "kl": float(kl.detach()), "ordinary_change": float(change.detach())})
            if step == hparams.steps:
                break  # the maps returned are the ones whose loss was measured last
            # Gradients of the maps only: the model's own parameters keep no .grad.
            grads = torch.autograd.grad(loss, list(maps.values()))
            for m, g in zip(maps.values(), grads):
                m.grad = g
            optimizer.step()
            ctx.report("fit", (step + 1) / hparams.steps)
        return {h: m.detach() for h, m in maps.items()}, history
