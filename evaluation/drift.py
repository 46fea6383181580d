"""Drift of the edited model from its unedited base on reference text: KL, top-1 agreement, perplexity.

The base side runs on the base weights (`WeightBook.base_weights`), never on an already-edited model.
"""

from __future__ import annotations

from importlib import resources

import torch
import torch.nn.functional as F

from suture.editor import Editor
from suture.editor.kv.readout import final_hidden
from suture.editor.progress import check_cancelled
from suture.evaluation.report import DriftReport


def default_reference_texts() -> list[str]:
    text = resources.files(__package__).joinpath("data/reference.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


@torch.no_grad()
def token_log_probs(editor: Editor, batch) -> torch.Tensor:
    """log P [batch, tokens, vocab] (float32) of the next token at every position of a tokenized `batch`, on
    the weights the editor holds now."""
    handle = editor.handle
    normed = final_hidden(handle, batch["input_ids"], batch["attention_mask"])
    logits = handle.model.get_submodule(handle.sites.unembed)(normed).float()
    softcap = handle.sites.logit_softcap(handle.model.config)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.log_softmax(logits, -1)


def token_kl(reference: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """KL(reference ‖ edited) [batch, tokens], nats, of two `token_log_probs` results."""
    return (reference.exp() * (reference - edited)).sum(-1)


@torch.no_grad()
def measure_drift(editor: Editor, texts: list[str] | None = None, batch_size: int = 16) -> DriftReport:
    texts = texts or default_reference_texts()
    tok = editor.tokenizer
    kl_all, agree, nll_base, nll_edit, count = [], 0, 0.0, 0.0, 0
    for start in range(0, len(texts), batch_size):
        check_cancelled()
        batch = tok(texts[start:start + batch_size], return_tensors="pt", padding=True).to(editor.handle.device)
        with editor.weights.base_weights():
            base = token_log_probs(editor, batch)
        edited = token_log_probs(editor, batch)
        mask = batch["attention_mask"].bool()
        kl = token_kl(base, edited)[mask]
        kl_all += kl.tolist()
        agree += int((base.argmax(-1) == edited.argmax(-1))[mask].sum())
        # Perplexity of the text itself: predict token t+1 from position t.
        next_ids = batch["input_ids"][:, 1:]
        next_mask = mask[:, 1:] & mask[:, :-1]
        nll_base -= float(base[:, :-1].gather(-1, next_ids[..., None]).squeeze(-1)[next_mask].sum())
        nll_edit -= float(edited[:, :-1].gather(-1, next_ids[..., None]).squeeze(-1)[next_mask].sum())
        count += int(next_mask.sum())
    return DriftReport(
        mean_kl=sum(kl_all) / len(kl_all), top1_agreement=agree / len(kl_all),
        perplexity_base=float(torch.exp(torch.tensor(nll_base / count))),
        perplexity_edited=float(torch.exp(torch.tensor(nll_edit / count))),
        kl_per_position=[round(v, 6) for v in kl_all])
