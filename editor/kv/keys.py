"""Keys: the input of a layer's MLP output projection at the subject's last token, averaged over
context templates. One forward pass serves every requested layer and stops at the highest."""

from __future__ import annotations

import torch

from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import capture_input, capture_output, hooks, run_until_stopped
from suture.editor.kv.templates import templates_for
from suture.editor.kv.tokens import build_batch
from suture.editor.prompt_template import parse_template
from suture.editor.requests import EditRequest


@torch.no_grad()
def keys_at_subject(handle: ModelHandle, layers: list[int], templates: list[str], subjects: list[str],
                    ) -> dict[int, torch.Tensor]:
    """{layer: [len(templates), d_in]} float32 keys at the subject's last token of each template filled with
    its subject ("{}" placeholders, `parse_template`), read on the handle's current weights in one forward
    pass that stops at the highest layer. Callers bound the batch: every row runs at once."""
    batch = build_batch(handle.tokenizer, templates, subjects).to(handle.device)
    sinks: dict[int, list] = {layer: [] for layer in layers}
    top = max(layers)
    modules = {layer: handle.model.get_submodule(handle.sites.mlp_out_path(layer)) for layer in layers}
    with hooks(*(capture_input(modules[layer], sinks[layer], stop=layer == top) for layer in layers)):
        run_until_stopped(handle.model, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    rows = torch.arange(batch.input_ids.shape[0], device=handle.device)
    return {layer: sinks[layer][0][rows, batch.subject_last].float() for layer in layers}


@torch.no_grad()
def compute_keys(handle: ModelHandle, layers: list[int], requests: list[EditRequest], templates: list[str],
                 ) -> dict[int, torch.Tensor]:
    """{layer: [n_requests, d_in]} keys, each averaged over the request's templates (`templates_for`)."""
    chosen = [templates_for(handle.tokenizer, r, templates) for r in requests]
    texts = [parse_template(r.prompt).within(t) for r, mine in zip(requests, chosen) for t in mine]
    subjects = [r.subject for r, mine in zip(requests, chosen) for _ in mine]
    owner = torch.tensor([i for i, mine in enumerate(chosen) for _ in mine], device=handle.device)
    counts = torch.bincount(owner, minlength=len(requests)).unsqueeze(1)
    keys = keys_at_subject(handle, layers, texts, subjects)
    return {layer: torch.zeros(len(requests), at_subject.shape[1], device=handle.device).index_add_(
        0, owner, at_subject) / counts for layer, at_subject in keys.items()}


@torch.no_grad()
def output_at_subject(handle: ModelHandle, module_path: str, requests: list[EditRequest]) -> torch.Tensor:
    """[n, d] output of a module (a block: the residual stream; an MLP output projection) at the subject's
    last token of each bare prompt: where MEMIT measures how much of its target is already delivered."""
    batch = build_batch(handle.tokenizer, [r.prompt for r in requests], [r.subject for r in requests])
    batch = batch.to(handle.device)
    sink: list[torch.Tensor] = []
    module = handle.model.get_submodule(module_path)
    with hooks(capture_output(module, sink, stop=True)):
        run_until_stopped(handle.model, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    rows = torch.arange(len(requests), device=handle.device)
    return sink[0][rows, batch.subject_last].float()
