"""Replay only the positions an edit at the subject can change, over a KV cache of the positions before it.

When δ is added to one layer's output at the subject's last token only (MEMIT's objective; ROME's without
`optimize_through_update`), nothing before that token changes, in any layer. Each row is therefore split
there: the prefix runs once, into the model's own KV cache, and each optimization step runs the model on the
remaining tokens only, through the standard incremental-decoding path (masks, rotary positions and sliding
windows as the architecture defines them). Every row splits at its own position, its prefix right-aligned in
the cache, so a step replays each row's own suffix and no more: on MEMIT's value batches of CounterFact
requests with context templates, 4 of a row's 16 tokens on average (906 of 3,666 positions for 32 requests).

With `margin`, the split is that many tokens before the subject, and `run_rank_one` replays the exact
rank-one update (W x + (ũ·x) δ at every replayed token): positions further back than `margin` keep the
unedited layer during the optimization (their ũ·x is that of unrelated text). That bounds the work of one
step on a long prompt by the margin plus what follows the subject, instead of the whole prompt.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from suture.editor.handle import ModelHandle
from suture.editor.kv.buckets import cheapest_buckets
from suture.editor.kv.capture import StopForward, capture_output, edit_output, hooks
from suture.editor.kv.incremental import with_cache
from suture.editor.kv.readout import logits_at
from suture.editor.kv.tokens import PromptBatch


@dataclass
class _Bucket:
    rows: torch.Tensor  # local rows of the batch
    splits: torch.Tensor  # [k] first replayed position of each row
    width: int  # replayed tokens per row: the longest suffix of the bucket (shorter ones are right-padded)
    prefix_mask: torch.Tensor  # [k, P] the cache's attention mask: each prefix right-aligned, padding on the left
    cache: object  # the model's KV cache of each row's positions < its split, left-padded to P


def _fork(cache: DynamicCache) -> DynamicCache:
    """A copy of `cache` that a forward pass can extend while `cache` stays as it is. Dynamic layers
    rebind their keys and values on update (torch.cat), never write into them, so the copy shares the
    tensors: 0.2 ms against 6.4 ms for a deep copy of SmolLM2's 30 layers (BENCHMARKS.md, "On a GPU"),
    a deep copy being 9% of an edit's time on an H200. Other layer kinds are deep-copied."""
    if not all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in cache.layers):
        return copy.deepcopy(cache)
    fork = copy.copy(cache)
    fork.layers = [copy.copy(layer) for layer in cache.layers]
    return fork


class PrefixReplay:
    """Final-norm hidden states of a batch from each row's subject position on, with δ added there.

    Each row splits at its own position: its prefix sits in the cache right-aligned (left padding, masked),
    so every row's replay starts at the cache's end and runs only its own suffix. Splitting a bucket at its
    smallest subject position instead replayed 2.5 times the needed tokens on MEMIT's value batches (224 rows
    of 32 CounterFact requests: 2,240 positions for 906). Rows are bucketed by suffix length, into as many
    batches as pay for their overhead (buckets.py): one for a single request's few rows, several for a
    chunk of many requests, so that neither right padding nor per-batch passes dominate."""

    def __init__(self, handle: ModelHandle, layer: int, batch: PromptBatch, n_buckets: int | None = None,
                 margin: int = 0):
        self.handle, self.batch, self.margin = handle, batch, margin
        self.mlp_out = handle.model.get_submodule(handle.sites.mlp_out_path(layer))
        self.final_norm = handle.model.get_submodule(handle.sites.final_norm)
        self.splits = (batch.subject_last - margin).clamp_min(0)  # [rows]
        widths = batch.lengths - self.splits
        # Buckets by suffix length, as many as pay for themselves (buckets.py); `n_buckets` forces a count.
        groups = (cheapest_buckets(widths, self.splits) if n_buckets is None
                  else torch.tensor_split(torch.argsort(widths, stable=True), min(n_buckets, len(widths))))
        self.buckets = [self._bucket(rows) for rows in groups if len(rows)]

    def narrow(self, rows: torch.Tensor) -> PrefixReplay:
        """The replay of this batch's `rows` (local indices, in that order), built from the caches already
        computed: each bucket keeps the cache rows of the rows it keeps (sliced, not rerun). The value
        optimization narrows its batch as requests settle; building replays took 15% of a 1,000-request
        MEMIT call's value optimization in one profile."""
        narrowed = copy.copy(self)
        narrowed.batch = self.batch.select(rows)
        narrowed.splits = self.splits[rows]
        position = torch.full((self.batch.input_ids.shape[0],), -1, dtype=torch.long, device=rows.device)
        position[rows] = torch.arange(len(rows), device=rows.device)
        narrowed.buckets = []
        for bucket in self.buckets:
            kept = torch.nonzero(position[bucket.rows] >= 0).flatten()
            if not len(kept):
                continue
            new_rows = position[bucket.rows[kept]]
            cache = _fork(bucket.cache)
            if bucket.prefix_mask.shape[1]:
                cache.batch_select_indices(kept)
            splits = bucket.splits[kept]
            width = int((narrowed.batch.lengths[new_rows] - splits).max())
            narrowed.buckets.append(_Bucket(new_rows, splits, width, bucket.prefix_mask[kept], cache))
        return narrowed

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache,
                 *extra_hooks) -> torch.Tensor:
        """Final-norm hidden states of the given tokens after `cache`'s positions (the LM head is skipped)."""
        sink: list[torch.Tensor] = []
        with hooks(*extra_hooks, capture_output(self.final_norm, sink, stop=True)), suppress(StopForward):
            self.handle.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              **with_cache(self.handle.model, cache))
        return sink[0]

    @torch.no_grad()
    def _bucket(self, rows: torch.Tensor) -> _Bucket:
        splits = self.splits[rows]
        width = int((self.batch.lengths[rows] - splits).max())
        cache = DynamicCache(config=self.handle.model.config)
        prefix = int(splits.max())
        columns = torch.arange(prefix, device=rows.device)
        pad = prefix - splits  # [k] padding columns before each row's prefix
        prefix_mask = (columns[None, :] >= pad[:, None]).long()
        if prefix > 0:  # every row's prefix is real: it ends before the row's subject
            source = (columns[None, :] - pad[:, None]).clamp_min(0)
            ids = torch.where(prefix_mask.bool(), self.batch.input_ids[rows[:, None], source], 0)
            self._forward(ids, prefix_mask, source, cache)
        return _Bucket(rows, splits, width, prefix_mask, cache)

    def _replay(self, edit_of_bucket: Callable[[_Bucket], object], *captures) -> torch.Tensor:
        """[rows, length, d] final-norm hidden states, zero before each row's split, with the hook that
        `edit_of_bucket(bucket)` registers active while the bucket's suffixes run."""
        batch = self.batch
        out = None
        for bucket in self.buckets:
            rows, splits, width = bucket.rows, bucket.splits, bucket.width
            offsets = torch.arange(width, device=rows.device)
            columns = splits[:, None] + offsets[None, :]  # [k, width] positions in the batch's rows
            real = columns < batch.lengths[rows, None]
            ids = torch.where(real, batch.input_ids[rows[:, None], columns.clamp_max(batch.input_ids.shape[1] - 1)], 0)
            mask = torch.cat([bucket.prefix_mask, real.long()], dim=1)
            normed = self._forward(ids, mask, columns, _fork(bucket.cache),
                                   *[h for h in (edit_of_bucket(bucket),) if h],
                                   *[capture(bucket) for capture in captures])
            if out is None:
                out = normed.new_zeros(batch.input_ids.shape[0], batch.input_ids.shape[1], normed.shape[-1])
            row_index = rows[:, None].expand_as(columns)
            out = out.index_put((row_index[real], columns[real]), normed[real])
        return out

    def run(self, delta_of_rows: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """[rows, length, d] final-norm hidden states, zero before each bucket's split; `delta_of_rows(rows)`
        gives the δ [k, d] to add at those rows' subject positions."""

        def edit(bucket: _Bucket):
            local = torch.arange(len(bucket.rows), device=bucket.rows.device)
            positions = self.batch.subject_last[bucket.rows] - bucket.splits
            delta = delta_of_rows(bucket.rows)

            def add(output: torch.Tensor) -> torch.Tensor:
                output = output.clone()
                output[local, positions] += delta.to(output.dtype)
                return output

            return edit_output(self.mlp_out, add)

        return self._replay(edit)

    def run_rank_one(self, direction_of_rows: Callable[[torch.Tensor], torch.Tensor],
                     delta_of_rows: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """As `run`, but the layer's output becomes W x + (ũ·x) δ at every replayed token, with ũ [k, d_in]
        from `direction_of_rows(rows)` and δ [k, d_out] from `delta_of_rows(rows)`."""

        def edit(bucket: _Bucket):
            direction, delta = direction_of_rows(bucket.rows), delta_of_rows(bucket.rows)

            def as_rank_one_update(_module, args, output):
                coeff = torch.einsum("rtd,rd->rt", args[0].float(), direction)
                return output + (coeff[..., None] * delta[:, None, :]).to(output.dtype)

            return self.mlp_out.register_forward_hook(as_rank_one_update)

        return self._replay(edit)

    @torch.no_grad()
    def first_pass(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The unedited pass over the replayed positions: (keys [rows, d_in] and outputs [rows, d_out] of the
        edited layer's MLP output projection at each row's subject, final-norm hidden states as `run`)."""
        rows_total = self.batch.input_ids.shape[0]
        keys: list[tuple[torch.Tensor, torch.Tensor]] = []
        outs: list[torch.Tensor] = []

        def capture(bucket: _Bucket):
            positions = self.batch.subject_last[bucket.rows] - bucket.splits
            local = torch.arange(len(bucket.rows), device=bucket.rows.device)

            def hook(_module, args, output):
                keys.append((bucket.rows, args[0][local, positions].float()))
                outs.append(output[local, positions].float())

            return self.mlp_out.register_forward_hook(hook)

        normed = self._replay(lambda _bucket: None, capture)
        d_in, d_out = keys[0][1].shape[1], outs[0].shape[1]
        device = normed.device
        key_rows = torch.zeros(rows_total, d_in, device=device)
        out_rows = torch.zeros(rows_total, d_out, device=device)
        for (rows, k), o in zip(keys, outs):
            key_rows[rows], out_rows[rows] = k, o
        return key_rows, out_rows, normed

    def logits_at(self, normed: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return logits_at(self.handle, normed, rows, cols)
