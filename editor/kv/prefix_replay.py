"""Replay only the positions an edit at the subject can change, over a KV cache of the positions before it.

When δ is added to one layer's output at the subject's last token only (MEMIT's objective; ROME's without
`optimize_through_update`), nothing before that token changes, in any layer. Each row is therefore split
there: the prefix runs once, into the model's own KV cache, and each optimization step runs the model on the
remaining tokens only, through the standard incremental-decoding path (masks, rotary positions and sliding
windows as the architecture defines them). Rows are bucketed by split position so one cache serves a bucket;
a bucket splits at its smallest subject position. On CounterFact-style prompts with context templates this
replays roughly a quarter of the tokens (an estimate from typical prompt lengths, not a measurement).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import StopForward, capture_output, edit_output, hooks
from suture.editor.kv.incremental import with_cache
from suture.editor.kv.readout import logits_at
from suture.editor.kv.tokens import PromptBatch


@dataclass
class _Bucket:
    rows: torch.Tensor  # local rows of the batch
    split: int  # first replayed position
    width: int  # last position + 1 over the bucket's rows
    cache: object  # the model's KV cache of positions < split


class PrefixReplay:
    """Final-norm hidden states of a batch from each row's subject position on, with δ added there."""

    def __init__(self, handle: ModelHandle, layer: int, batch: PromptBatch, n_buckets: int = 4):
        self.handle, self.batch = handle, batch
        self.mlp_out = handle.model.get_submodule(handle.sites.mlp_out_path(layer))
        self.final_norm = handle.model.get_submodule(handle.sites.final_norm)
        order = torch.argsort(batch.subject_last, stable=True)
        self.buckets = [self._bucket(rows) for rows in torch.tensor_split(order, min(n_buckets, len(order)))
                        if len(rows)]

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache, *extra_hooks) -> torch.Tensor:
        """Final-norm hidden states of the given tokens after `cache`'s positions (the LM head is skipped)."""
        sink: list[torch.Tensor] = []
        with hooks(*extra_hooks, capture_output(self.final_norm, sink, stop=True)), suppress(StopForward):
            self.handle.model(input_ids=input_ids, attention_mask=attention_mask,
                              **with_cache(self.handle.model, cache))
        return sink[0]

    @torch.no_grad()
    def _bucket(self, rows: torch.Tensor) -> _Bucket:
        split = int(self.batch.subject_last[rows].min())
        width = int(self.batch.lengths[rows].max())
        cache = DynamicCache(config=self.handle.model.config)
        if split > 0:  # the prefix has no padding: every row of the bucket is real up to its subject
            self._forward(self.batch.input_ids[rows, :split], self.batch.attention_mask[rows, :split], cache)
        return _Bucket(rows, split, width, cache)

    def run(self, delta_of_rows: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """[rows, length, d] final-norm hidden states, zero before each bucket's split; `delta_of_rows(rows)`
        gives the δ [k, d] to add at those rows' subject positions."""
        batch = self.batch
        out = None
        for bucket in self.buckets:
            rows, split = bucket.rows, bucket.split
            positions = batch.subject_last[rows] - split
            local = torch.arange(len(rows), device=rows.device)
            delta = delta_of_rows(rows)

            def add(output: torch.Tensor, positions=positions, local=local, delta=delta) -> torch.Tensor:
                output = output.clone()
                output[local, positions] += delta.to(output.dtype)
                return output

            normed = self._forward(batch.input_ids[rows, split:bucket.width], batch.attention_mask[rows, :bucket.width],
                                   copy.deepcopy(bucket.cache), edit_output(self.mlp_out, add))
            if out is None:
                out = normed.new_zeros(batch.input_ids.shape[0], batch.input_ids.shape[1], normed.shape[-1])
            cols = torch.arange(split, bucket.width, device=rows.device)
            out = out.index_put((rows[:, None], cols[None, :]), normed)
        return out

    def logits_at(self, normed: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return logits_at(self.handle, normed, rows, cols)
