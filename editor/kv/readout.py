"""Reading the model's output only where it is needed: the final-norm hidden state from one pass that
stops before the unembedding, and logits at chosen (row, position) pairs."""

from __future__ import annotations

from contextlib import suppress

import torch

from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import StopForward, capture_output, hooks


def final_hidden(handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final-norm hidden states [rows, length, d]; the vocabulary projection is skipped."""
    sink: list[torch.Tensor] = []
    norm = handle.model.get_submodule(handle.sites.final_norm)
    with hooks(capture_output(norm, sink, stop=True)), suppress(StopForward):
        handle.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return sink[0]


def logits_at(handle: ModelHandle, normed: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Float32 logits [pairs, vocab] at (rows[i], cols[i]), with the family's logit soft cap if any."""
    logits = handle.model.get_submodule(handle.sites.unembed)(normed[rows, cols])
    softcap = handle.sites.logit_softcap(handle.model.config)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.float()
