"""Target values v* for MLP edits, optimized with the ROME objective.

For each request a vector δ is added to the MLP output at the subject's last token of layer l, in every
context template, and optimized so that the model predicts the new target:

    loss = NLL(target_new | template + prompt)                       (averaged over templates)
         + kl_factor · KL(p_δ || p_orig) at the subject of "{} is a"  (keeps the subject's essence)
         + echo_factor · KL(p_δ || p_orig) over the subject restated after the prompt (echo.py; ROME sets it)
         + weight_decay · ‖δ‖ / ‖v₀‖²

with ‖δ‖ clamped to clamp_norm_factor · ‖v₀‖ and early stopping once the target NLL is small. Each step
replays only what δ can change: with δ at the subject, the tokens from the subject on over a KV cache of
the rest (prefix_replay.py); through the rank-one update, blocks l.. over their recorded inputs
(suffix.py). Logits are computed only where the loss reads them.

Requests in one call are optimized together, each with its own δ, loss and stopping test, so this equals
optimizing them apart; a request that has met the test keeps its δ and, once enough have, its rows leave
the replayed batch. Requests that share their key (shared_keys.py: same subject, same text before it)
share one δ, optimized on the sum of their losses until all of them pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import capture_input, capture_output, hooks
from suture.editor.kv.prefix_replay import PrefixReplay
from suture.editor.kv.shared_keys import value_slots
from suture.editor.kv.suffix import GroupedSuffixRunner, SuffixRunner
from suture.editor.kv.value_layout import value_layout
from suture.editor.kv.word_boundary import continuation_mask
from suture.editor.progress import check_cancelled
from suture.editor.prompt_template import parse_template
from suture.editor.requests import EditRequest

# Tokens before the subject's last token that the rank-one replay recomputes at every step; further back,
# positions keep the unedited layer while δ is optimized (see prefix_replay.py). Rows with fewer tokens
# before the subject (every short prompt, context prefix included) are replayed whole, exactly.
REPLAY_MARGIN = 64


class ValueObjective(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # "adam" (ROME's): every coordinate of δ moves about `lr` per step whatever the loss needs there, so ‖δ‖
    # grows like lr·√d per step. "normalized_gradient": each step moves δ by lr·‖v₀‖ along the loss's
    # gradient (steepest descent in the L2 norm), so the stopping test is met with a shorter δ; a layer's
    # update writes δ into every other key in proportion to its length (drift, BENCHMARKS.md).
    optimizer: Literal["adam", "normalized_gradient"] = "adam"
    lr: float = Field(0.5, gt=0, description="Adam's learning rate; with normalized_gradient, a step's "
                      "length as a fraction of ‖v₀‖")
    steps: int = Field(20, ge=1, le=1000)
    kl_factor: float = Field(0.0625, ge=0)
    weight_decay: float = Field(0.5, ge=0)
    clamp_norm_factor: float = Field(4.0, gt=0)
    # Stop once every target token's NLL is below this in every template (per token: under ln 2 ≈ 0.69
    # each target token is the greedy choice after the ones before it). The decay term is left out of the test on
    # purpose: it scales with ‖δ‖/‖v₀‖², which never vanishes on models with small MLP outputs (Llama).
    early_stop_nll: float = Field(0.05, ge=0)
    kl_prompt: str = "{} is a"
    # Also ask that the token after the target not continue its last word (word_boundary.py): without it
    # " sit|com" came out as " sitcoms" and " ESP|N" as " ESPNCOPE". Adds -log(1 - P(continuation)) to
    # the request's loss and to its stopping test.
    word_boundary: bool = False
    # Keep the model able to restate the subject (echo.py): KL(p_δ || p_orig) at each token of the subject
    # copied after the prompt, mean over the copy's tokens, times this factor; 0 leaves the rows out.
    echo_factor: float = Field(0.0, ge=0)

    @field_validator("kl_prompt")
    @classmethod
    def _kl_template(cls, value: str) -> str:
        parse_template(value)  # one parser for every template; ValueError names the reason
        return value


@dataclass
class ValueSolution:
    keys: torch.Tensor  # [n, d_in]  subject-last keys averaged over templates (input of the MLP out proj)
    deltas: torch.Tensor  # [n, d_out] optimized change of the MLP output (the residual to write)
    init_values: torch.Tensor  # [n, d_out] MLP output at the subject in the bare prompt, before the edit
    target_prob: torch.Tensor  # [n] mean probability of target_new tokens at the last step
    steps: int
    bare_keys: torch.Tensor | None = None  # [n, d_in] the key at the subject in the prompt as written


def _rank_one_hook(mlp_out, rows: torch.Tensor, row_slot: torch.Tensor, delta: torch.Tensor,
                   row_direction: torch.Tensor):
    """The edited layer itself on the replayed `rows` (indices into the full batch): W x + (ũ·x) δ at every token."""
    owner, direction = row_slot[rows], row_direction[rows]

    def as_rank_one_update(_module, args, output):
        coeff = torch.einsum("rtd,rd->rt", args[0].float(), direction)
        return output + (coeff[..., None] * delta[owner][:, None, :]).to(output.dtype)

    return mlp_out.register_forward_hook(as_rank_one_update)


def optimize_values(
    handle: ModelHandle,
    layer: int,
    requests: list[EditRequest],
    templates: list[str],
    objective: ValueObjective,
    progress: Callable[[int, float], None] | None = None,
    read_direction: Callable[[torch.Tensor], torch.Tensor] | None = None,
    step_metric: torch.Tensor | None = None,
) -> ValueSolution:
    """Optimize one δ per request (one per key: requests that share their key share it).

    Without `read_direction`, δ is added at the subject's last token only (ROME's objective). With it,
    the optimization runs through the exact rank-one update the method will make: `read_direction(keys)`
    gives per request a vector ũ with ũ·k* = 1 (for ROME ũ = C⁻¹k*/(k*ᵀC⁻¹k*)), and the layer's output
    becomes W x + (ũ·x) δ at every token, which is W' x. What the loss sees is then what the edited
    model does, on every template, the KL prompt and every other position alike.

    `step_metric` (P [d_out, d_out], symmetric; only with the normalized_gradient optimizer) turns each
    gradient g into the step direction P g before it is normalized: steepest descent in the metric P⁻¹
    (output_fisher.natural_step).
    """
    if step_metric is not None and objective.optimizer != "normalized_gradient":
        raise ValueError("a step metric needs the normalized_gradient optimizer")
    device = handle.device
    n = len(requests)
    batch, lay = value_layout(handle.tokenizer, requests, templates, objective.kl_prompt, objective.word_boundary,
                              echo=objective.echo_factor > 0)
    batch, lay = batch.to(device), lay.to(device)
    mlp_out = handle.model.get_submodule(handle.sites.mlp_out_path(layer))
    total_rows = batch.input_ids.shape[0]
    rows_all = torch.arange(total_rows, device=device)

    # δ at the subject only changes nothing before it: replay from the subject on (prefix_replay.py). Through
    # the rank-one update every position changes: replay the blocks from `layer` up (suffix.py), or, when a
    # row has more than REPLAY_MARGIN tokens before its subject, replay from that margin before the subject
    # over a cache of the rest (prefix_replay.py), so a step costs the same on a long prompt as on a short one.
    long_prefix = int(batch.subject_last.max()) > REPLAY_MARGIN
    margin = REPLAY_MARGIN if read_direction is not None else 0

    echo_row = torch.zeros(total_rows, dtype=torch.bool, device=device)
    echo_row[lay.echo_rows] = True

    def replayer(rows: torch.Tensor):
        """The runner of the batch rows `rows` (in that order). Echo rows (echo.py) are much longer than the
        others: replayed through the rank-one update, they run apart rather than pad every row to theirs."""
        rows_batch = batch if len(rows) == total_rows else batch.select(rows)
        if read_direction is None or long_prefix:
            return PrefixReplay(handle, layer, rows_batch, margin=margin)
        if bool(echo_row[rows].any()):
            local = torch.arange(len(rows), device=device)
            return GroupedSuffixRunner(handle, layer, rows_batch, [local[~echo_row[rows]], local[echo_row[rows]]])
        return SuffixRunner(handle, layer, rows_batch)

    # One pass over each row, no padding to the longest row, no second pass for the caches: whenever the
    # runner replays from the subject on (a full first pass was a fifth of a MEMIT call's value optimization).
    if long_prefix or read_direction is None:
        runner = replayer(rows_all)
        keys_rows, outs_rows, first_normed = runner.first_pass()
    else:
        # Through the rank-one update every position changes: one full pass gives the keys and initial outputs
        # at the subject's last token and the unedited output distribution, and records the suffix runner.
        key_sink: list[torch.Tensor] = []
        out_sink: list[torch.Tensor] = []
        with hooks(capture_input(mlp_out, key_sink), capture_output(mlp_out, out_sink)):
            runner = SuffixRunner(handle, layer, batch)
            first_normed = runner.final_hidden
        if bool(echo_row.any()):
            runner = replayer(rows_all)
        keys_rows = key_sink[0][rows_all, batch.subject_last].float()  # [rows, d_in]
        outs_rows = out_sink[0][rows_all, batch.subject_last].float()
    rewrite_owner = lay.request_of_row[lay.rewrite_rows]
    keys = torch.zeros(n, keys_rows.shape[1], device=device).index_add_(0, rewrite_owner, keys_rows[lay.rewrite_rows])
    keys /= torch.bincount(rewrite_owner, minlength=n).unsqueeze(1)
    # Each request's bare "{}" template is the first row of its block: its output is ROME's v₀.
    init_values = outs_rows[lay.bare_rows]
    slot = torch.tensor(value_slots(requests), device=device)  # [n] the δ each request writes
    n_slots = int(slot.max()) + 1
    row_slot = slot[lay.request_of_row]
    slot_first = torch.full((n_slots,), n, device=device).scatter_reduce(
        0, slot, torch.arange(n, device=device), "amin")  # the first request of each slot

    kl_cols = batch.subject_last[lay.kl_rows]  # KL rows are in request order
    with torch.no_grad():
        kl_init = F.log_softmax(runner.logits_at(first_normed, lay.kl_rows, kl_cols), dim=-1)
        echo_init = F.log_softmax(runner.logits_at(first_normed, lay.echo_rows, lay.echo_cols), dim=-1)
    echo_counts = torch.bincount(lay.echo_request, minlength=n).clamp_min(1)

    continuing = None  # the vocabulary mask of word-continuing tokens, built on first use
    boundary_counts = torch.bincount(lay.boundary_request, minlength=n).clamp_min(1)
    delta = torch.zeros(n_slots, init_values.shape[1], device=device, requires_grad=True)
    init_norm = init_values[slot_first].norm(dim=1)  # [n_slots] ‖v₀‖
    normalized = objective.optimizer == "normalized_gradient"
    # Normalized steps: the gradient is rescaled to length lr·‖v₀‖ before a plain step of rate 1.
    optimizer = torch.optim.SGD([delta], lr=1.0) if normalized else torch.optim.Adam([delta], lr=objective.lr)
    max_norm = objective.clamp_norm_factor * init_norm
    row_direction = None if read_direction is None else read_direction(keys).float()[lay.request_of_row]
    active = torch.ones(n, dtype=torch.bool, device=device)  # requests whose slot still optimizes
    slot_active = torch.ones(n_slots, dtype=torch.bool, device=device)
    settled = torch.zeros(n_slots, init_values.shape[1], device=device)  # δ of slots that met the test
    target_prob = torch.zeros(n, device=device)
    replayed = rows_all  # rows of the full batch the runner replays, in the runner's order
    steps_done = 0
    for step in range(objective.steps):
        check_cancelled()
        steps_done = step + 1
        if read_direction is None:
            normed = runner.run(lambda rows, replayed=replayed: delta[row_slot[replayed[rows]]])
        elif long_prefix:
            normed = runner.run_rank_one(lambda rows, replayed=replayed: row_direction[replayed[rows]],
                                         lambda rows, replayed=replayed: delta[row_slot[replayed[rows]]])
        else:
            normed = runner.run_hooked(lambda rows, replayed=replayed: _rank_one_hook(
                mlp_out, replayed[rows], row_slot, delta, row_direction))
        local = torch.full((total_rows,), -1, dtype=torch.long, device=device)
        local[replayed] = torch.arange(len(replayed), device=device)
        present = local[lay.target_rows] >= 0
        t_rows, t_req = lay.target_rows[present], lay.target_request[present]
        logits = runner.logits_at(normed, local[t_rows], lay.target_cols[present])
        token_logp = F.log_softmax(logits, dim=-1).gather(1, lay.target_ids[present][:, None]).squeeze(1)
        # NLL per request: mean over its target tokens and templates.
        nll = torch.zeros(n, device=device).index_add_(0, t_req, -token_logp) / lay.target_counts
        row_nll = torch.zeros(total_rows, device=device).scatter_reduce(
            0, t_rows, -token_logp.detach(), "amax", include_self=False)
        if len(lay.boundary_rows):
            here = torch.nonzero(local[lay.boundary_rows] >= 0).flatten()
            b_rows = lay.boundary_rows[here]
            b_logits = runner.logits_at(normed, local[b_rows], lay.boundary_cols[here])
            if continuing is None:
                continuing = continuation_mask(handle.tokenizer, b_logits.shape[-1], device)
            log_continue = torch.logsumexp(F.log_softmax(b_logits, dim=-1)[:, continuing], dim=-1)
            boundary_nll = -torch.log(-torch.expm1(log_continue.clamp(max=-1e-6)))  # -log(1 - P(continue))
            nll = nll + torch.zeros(n, device=device).index_add_(
                0, lay.boundary_request[here], boundary_nll) / boundary_counts
            row_nll = row_nll.scatter_reduce(0, b_rows, boundary_nll.detach(), "amax")
        kl_req = torch.nonzero(local[lay.kl_rows] >= 0).flatten()
        kl_logp = F.log_softmax(runner.logits_at(normed, local[lay.kl_rows[kl_req]], kl_cols[kl_req]), dim=-1)
        kl = torch.zeros(n, device=device).index_add_(  # KL(p_δ || p_orig)
            0, kl_req, F.kl_div(kl_init[kl_req], kl_logp, log_target=True, reduction="none").sum(-1))
        echo = torch.zeros(n, device=device)  # mean KL over the subject's copy (echo.py)
        if len(lay.echo_rows):
            here = torch.nonzero(local[lay.echo_rows] >= 0).flatten()
            e_logp = F.log_softmax(runner.logits_at(normed, local[lay.echo_rows[here]], lay.echo_cols[here]), dim=-1)
            echo_kl = F.kl_div(echo_init[here], e_logp, log_target=True, reduction="none").sum(-1)
            echo = echo.index_add(0, lay.echo_request[here], echo_kl) / echo_counts
        decay = objective.weight_decay * delta[slot].norm(dim=1) / init_values.norm(dim=1).pow(2)
        per_request = (nll + objective.kl_factor * kl + objective.echo_factor * echo + decay) * active
        with torch.no_grad():
            prob = torch.zeros(n, device=device).index_add_(0, t_req, token_logp.exp()) / lay.target_counts
            target_prob = torch.where(active, prob, target_prob)
        if progress:
            progress(step, float(per_request.detach()[active].mean()))
        # Stop a request when its target is likely in every template, the bare prompt included: a good mean
        # can hide a bare prompt that still prefers the old answer.
        # Per token, not the mean: a target split into several tokens has easy later tokens that would
        # hide a first token that is still unlikely (the greedy answer would still be the old one).
        worst = torch.zeros(n, device=device).scatter_reduce(
            0, rewrite_owner, row_nll[lay.rewrite_rows], "amax", include_self=False)
        failing = (worst >= objective.early_stop_nll).float()
        unfinished = torch.zeros(n_slots, device=device).index_add_(0, slot, failing)
        finished = slot_active & (unfinished == 0)  # a shared δ stops when every request of it passes
        settled[finished] = delta.detach()[finished]
        slot_active = slot_active & ~finished
        active = slot_active[slot]
        if not bool(active.any()) or step == objective.steps - 1:
            break  # every returned δ is one whose loss was measured
        optimizer.zero_grad()
        per_request.sum().backward()
        if normalized:
            with torch.no_grad():
                grad = delta.grad
                if step_metric is not None:
                    grad.copy_(grad @ step_metric)
                grad.mul_((objective.lr * init_norm / grad.norm(dim=1).clamp_min(1e-12))[:, None])
        optimizer.step()
        with torch.no_grad():
            norms = delta.norm(dim=1)
            scale = torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-12), torch.ones_like(norms))
            delta.mul_(scale[:, None])
            delta[~slot_active] = settled[~slot_active]
        keep = active[lay.request_of_row]
        if int(keep.sum()) <= 0.75 * len(replayed):  # re-recording costs one pass; worth it once rows drop
            narrowed = rows_all[keep]
            # From the subject on, the kept rows' caches are sliced from the runner's (prefix_replay.py).
            runner = runner.narrow(local[narrowed]) if isinstance(runner, PrefixReplay) else replayer(narrowed)
            replayed = narrowed
    return ValueSolution(keys=keys.detach(), deltas=delta.detach()[slot], init_values=init_values,
                         target_prob=target_prob.detach(), steps=steps_done, bare_keys=keys_rows[lay.bare_rows])
