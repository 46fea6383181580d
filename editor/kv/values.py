"""Target values v* for MLP edits, optimized with the ROME objective.

For each request a vector δ is added to the MLP output at the subject's last token of layer l, in every
context template, and optimized so that the model predicts the new target:

    loss = NLL(target_new | template + prompt)                       (averaged over templates)
         + kl_factor · KL(p_δ || p_orig) at the subject of "{} is a"  (keeps the subject's essence)
         + weight_decay · ‖δ‖ / ‖v₀‖²

with ‖δ‖ clamped to clamp_norm_factor · ‖v₀‖ and early stopping once the target NLL is small. The
blocks below l run once; each step replays only blocks l.. (see suffix.py) and computes logits only
where the loss reads them. Requests in one call are optimized together (each has its own δ and loss,
so this equals optimizing them apart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from editor.handle import ModelHandle
from editor.kv.capture import capture_input, capture_output, edit_output, hooks
from editor.kv.suffix import SuffixRunner
from editor.kv.tokens import build_batch, encode_target
from editor.requests import EditRequest


class ValueObjective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(0.5, gt=0)
    steps: int = Field(20, ge=1, le=1000)
    kl_factor: float = Field(0.0625, ge=0)
    weight_decay: float = Field(0.5, ge=0)
    clamp_norm_factor: float = Field(4.0, gt=0)
    # Stop once the target NLL is below this in every template. The decay term is left out of the test on
    # purpose: it scales with ‖δ‖/‖v₀‖², which never vanishes on models with small MLP outputs (Llama).
    early_stop_nll: float = Field(0.05, ge=0)
    kl_prompt: str = "{} is a"


@dataclass
class ValueSolution:
    keys: torch.Tensor  # [n, d_in]  subject-last keys averaged over templates (input of the MLP out proj)
    deltas: torch.Tensor  # [n, d_out] optimized change of the MLP output (the residual to write)
    init_values: torch.Tensor  # [n, d_out] MLP output at the subject in the bare prompt, before the edit
    target_prob: torch.Tensor  # [n] mean probability of target_new tokens at the last step
    steps: int


@dataclass
class _Layout:
    """Which rows of the batch belong to which request, and where the loss reads logits."""

    request_of_row: torch.Tensor
    rewrite_rows: torch.Tensor  # rows holding template+prompt+target
    kl_rows: torch.Tensor
    target_rows: torch.Tensor  # one entry per target token to predict
    target_cols: torch.Tensor
    target_ids: torch.Tensor
    target_request: torch.Tensor
    target_counts: torch.Tensor  # tokens per request target, for averaging


def _layout(handle: ModelHandle, requests: list[EditRequest], templates: list[str], kl_prompt: str):
    tok = handle.tokenizer
    texts, subjects, suffixes, owner, is_kl = [], [], [], [], []
    targets = [encode_target(tok, r.target_new) for r in requests]
    for i, request in enumerate(requests):
        for template in templates:
            texts.append(template.replace("{}", request.prompt))
            subjects.append(request.subject)
            suffixes.append(targets[i][:-1])
            owner.append(i)
            is_kl.append(False)
    for i, request in enumerate(requests):
        texts.append(kl_prompt)
        subjects.append(request.subject)
        suffixes.append([])
        owner.append(i)
        is_kl.append(True)
    batch = build_batch(tok, texts, subjects, suffixes)
    rows, cols, ids, req = [], [], [], []
    for row, (i, kl) in enumerate(zip(owner, is_kl)):
        if kl:
            continue
        prompt_len = int(batch.lengths[row]) - len(suffixes[row])
        for j, token in enumerate(targets[i]):
            rows.append(row)
            cols.append(prompt_len - 1 + j)
            ids.append(token)
            req.append(i)
    owner_t = torch.tensor(owner)
    is_kl_t = torch.tensor(is_kl)
    layout = _Layout(
        request_of_row=owner_t,
        rewrite_rows=torch.nonzero(~is_kl_t).flatten(),
        kl_rows=torch.nonzero(is_kl_t).flatten(),
        target_rows=torch.tensor(rows), target_cols=torch.tensor(cols), target_ids=torch.tensor(ids),
        target_request=torch.tensor(req),
        target_counts=torch.bincount(torch.tensor(req), minlength=len(requests)),
    )
    return batch, layout


def optimize_values(
    handle: ModelHandle,
    layer: int,
    requests: list[EditRequest],
    templates: list[str],
    objective: ValueObjective,
    progress: Callable[[int, float], None] | None = None,
    read_direction: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ValueSolution:
    """Optimize one δ per request.

    Without `read_direction`, δ is added at the subject's last token only (ROME's objective). With it,
    the optimization runs through the exact rank-one update the method will make: `read_direction(keys)`
    gives per request a vector ũ with ũ·k* = 1 (for ROME ũ = C⁻¹k*/(k*ᵀC⁻¹k*)), and the layer's output
    becomes W x + (ũ·x) δ at every token, which is W' x. What the loss sees is then what the edited
    model does, on every template, the KL prompt and every other position alike.
    """
    device = handle.device
    n = len(requests)
    batch, lay = _layout(handle, requests, templates, objective.kl_prompt)
    batch = batch.to(device)
    lay = _Layout(*(t.to(device) for t in vars(lay).values()))
    mlp_out = handle.model.get_submodule(handle.sites.mlp_out_path(layer))
    rows_all = torch.arange(batch.input_ids.shape[0], device=device)

    # One full pass: block inputs from `layer` up, keys and initial outputs at the subject's last token.
    key_sink: list[torch.Tensor] = []
    out_sink: list[torch.Tensor] = []
    with hooks(capture_input(mlp_out, key_sink), capture_output(mlp_out, out_sink)):
        runner = SuffixRunner(handle, layer, batch)
    keys_rows = key_sink[0][rows_all, batch.subject_last].float()  # [rows, d_in]
    outs_rows = out_sink[0][rows_all, batch.subject_last].float()
    rewrite_owner = lay.request_of_row[lay.rewrite_rows]
    keys = torch.zeros(n, keys_rows.shape[1], device=device).index_add_(0, rewrite_owner, keys_rows[lay.rewrite_rows])
    keys /= torch.bincount(rewrite_owner, minlength=n).unsqueeze(1)
    # The bare "{}" template is the first row of each request's block: its output is ROME's v₀.
    first_rows = lay.rewrite_rows.view(n, -1)[:, 0]
    init_values = outs_rows[first_rows]

    kl_rows, kl_cols = lay.kl_rows, batch.subject_last[lay.kl_rows]
    with torch.no_grad():
        kl_init = F.log_softmax(runner.logits_at(runner.final_hidden, kl_rows, kl_cols), dim=-1)

    delta = torch.zeros(n, init_values.shape[1], device=device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=objective.lr)
    max_norm = objective.clamp_norm_factor * init_values.norm(dim=1)
    row_delta_index = lay.request_of_row

    def add_delta(output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[rows_all, batch.subject_last] += delta[row_delta_index].to(output.dtype)
        return output

    if read_direction is None:
        hook = edit_output(mlp_out, add_delta)
    else:
        row_direction = read_direction(keys).float()[row_delta_index]  # [rows, d_in]

        def as_rank_one_update(_module, args, output):
            coeff = torch.einsum("rtd,rd->rt", args[0].float(), row_direction)
            return output + (coeff[..., None] * delta[row_delta_index][:, None, :]).to(output.dtype)

        hook = mlp_out.register_forward_hook(as_rank_one_update)

    target_prob = torch.zeros(n, device=device)
    steps_done = 0
    with hooks(hook):
        for step in range(objective.steps):
            steps_done = step + 1
            normed = runner.run()
            logits = runner.logits_at(normed, lay.target_rows, lay.target_cols)
            token_logp = F.log_softmax(logits, dim=-1).gather(1, lay.target_ids[:, None]).squeeze(1)
            # NLL per request: mean over its target tokens and templates.
            nll = torch.zeros(n, device=device).index_add_(0, lay.target_request, -token_logp) / lay.target_counts
            kl_logp = F.log_softmax(runner.logits_at(normed, kl_rows, kl_cols), dim=-1)
            kl = F.kl_div(kl_init, kl_logp, log_target=True, reduction="none").sum(-1)  # KL(p_δ || p_orig)
            decay = objective.weight_decay * delta.norm(dim=1) / init_values.norm(dim=1).pow(2)
            per_request = nll + objective.kl_factor * kl + decay
            with torch.no_grad():
                target_prob = torch.zeros(n, device=device).index_add_(
                    0, lay.target_request, token_logp.exp()) / lay.target_counts
            loss = per_request.sum()
            if progress:
                progress(step, float(per_request.detach().mean()))
            # Stop when the target is likely in every template, the bare prompt included: a good mean
            # can hide a bare prompt that still prefers the old answer.
            row_nll = torch.zeros(batch.input_ids.shape[0], device=device).index_add_(
                0, lay.target_rows, -token_logp.detach()) / lay.target_counts[lay.request_of_row]
            worst = row_nll[lay.rewrite_rows].max()
            if bool(worst < objective.early_stop_nll) or step == objective.steps - 1:
                break  # the returned δ is always one whose loss was measured
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                norms = delta.norm(dim=1)
                scale = torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-12), torch.ones_like(norms))
                delta.mul_(scale[:, None])
    return ValueSolution(keys=keys.detach(), deltas=delta.detach(), init_values=init_values,
                         target_prob=target_prob.detach(), steps=steps_done)
