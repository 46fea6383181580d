"""Run only the blocks above an edited layer, reusing one recorded full forward pass.

Optimizing a value vector at layer l changes nothing below l, so the blocks under it are run once per
edit, not once per optimization step. The keyword arguments each block received (masks, rotary
embeddings, per-layer attention types) are recorded as the model passed them, which keeps this free of
any architecture-specific call signature.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

import torch

from suture.editor.errors import EditFailedError
from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import StopForward, hooks
from suture.editor.kv.readout import logits_at
from suture.editor.kv.tokens import PromptBatch


@dataclass
class _BlockCall:
    args: tuple
    kwargs: dict


class SuffixRunner:
    """Recorded inputs of blocks `start..` for one prompt batch, replayable with a changed hidden state."""

    def __init__(self, handle: ModelHandle, start: int, batch: PromptBatch):
        self.handle = handle
        self.start = start
        self.blocks = list(handle.sites.layer_modules(handle.model))[start:]
        self.final_norm = handle.model.get_submodule(handle.sites.final_norm)
        self.calls: list[_BlockCall] = []
        self.final_hidden: torch.Tensor | None = None
        self._record(batch)

    def _record(self, batch: PromptBatch) -> None:
        def recorder(_module, args, kwargs):
            self.calls.append(_BlockCall(args, dict(kwargs)))

        def final(_module, _args, output):
            self.final_hidden = output
            raise StopForward  # the unembedding of every position is not needed

        handles = [b.register_forward_pre_hook(recorder, with_kwargs=True) for b in self.blocks]
        handles.append(self.final_norm.register_forward_hook(final))
        with hooks(*handles), torch.no_grad(), suppress(StopForward):
            self.handle.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        if len(self.calls) != len(self.blocks) or self.final_hidden is None:
            raise EditFailedError("the model did not call its blocks once each in order; cannot replay a suffix")

    @property
    def start_hidden(self) -> torch.Tensor:
        call = self.calls[0]
        return call.args[0] if call.args else call.kwargs["hidden_states"]

    def run(self) -> torch.Tensor:
        """Final-norm hidden states [rows, length, d] from the recorded input of block `start`."""
        hidden = self.start_hidden
        for block, call in zip(self.blocks, self.calls):
            if call.args:
                out = block(hidden, *call.args[1:], **call.kwargs)
            else:
                out = block(**{**call.kwargs, "hidden_states": hidden})
            hidden = out[0] if isinstance(out, tuple) else out
        return self.final_norm(hidden)

    def logits_at(self, normed: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Logits only at the (row, position) pairs a loss reads."""
        return logits_at(self.handle, normed, rows, cols)

    def run_hooked(self, hook_of_rows) -> torch.Tensor:
        """`run` with the hook `hook_of_rows(rows)` registers (rows: every row, in batch order) active."""
        with hooks(hook_of_rows(torch.arange(self.start_hidden.shape[0], device=self.start_hidden.device))):
            return self.run()


class GroupedSuffixRunner:
    """SuffixRunners over groups of a batch's rows, each group trimmed to its own longest row and run apart,
    so that short rows are not padded to a much longer one (the value objective's chat echo row is about 50
    tokens beside context-template rows of about 20; padded together, the replay costs about twice as much)."""

    def __init__(self, handle: ModelHandle, start: int, batch: PromptBatch, groups: list[torch.Tensor]):
        self.handle = handle
        self.groups = [group for group in groups if len(group)]
        self.runners = [SuffixRunner(handle, start, batch.select(group)) for group in self.groups]
        self.shape = tuple(batch.input_ids.shape)

    def run_hooked(self, hook_of_rows) -> torch.Tensor:
        """Final-norm hidden states [rows, length, d] (zero past each group's width); `hook_of_rows(rows)`
        registers the hook active while the group of batch rows `rows` runs."""
        out = None
        for group, runner in zip(self.groups, self.runners):
            with hooks(hook_of_rows(group)):
                normed = runner.run()
            if out is None:
                out = normed.new_zeros(*self.shape, normed.shape[-1])
            cols = torch.arange(normed.shape[1], device=group.device)
            out = out.index_put((group[:, None], cols[None, :]), normed)
        return out

    def logits_at(self, normed: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return logits_at(self.handle, normed, rows, cols)
