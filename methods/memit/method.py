"""MEMIT (Meng et al., 2023): many facts in one update spread over several MLP layers.

Values are optimized at the last layer of the window; each layer in turn then takes its share of what
is still missing at that layer's residual stream, solved in closed form against the key covariance.
Requests are processed in chunks so thousands fit in bounded memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import torch

from suture.editor import EditContext, EditMethod, EditRequest, MethodOutput, WeightDelta, register_method
from suture.editor.errors import InvalidHyperparametersError
from suture.editor.handle import ModelHandle
from suture.editor.kv import compute_keys, optimize_values
from suture.editor.kv.keys import output_at_subject
from suture.editor.kv.output_fisher import natural_step
from suture.editor.kv.shared_keys import packed_key_groups
from suture.editor.kv.templates import requests_in_contexts
from suture.editor.verdicts import target_token_checks
from suture.methods.memit.hparams import MemitHParams, default_layers
from suture.methods.shared.least_squares import memit_factors, null_space_factors
from suture.methods.shared.least_write import LeastWrite, least_written_scale
from suture.methods.shared.norm_anchor import anchor_deltas, anchor_norm
from suture.methods.shared.preserved_keys import cached_projector, earlier_keys_gram, sum_grams
from suture.methods.shared.running_covariance import running_second_moment
from suture.methods.shared.shared_value import ARTIFACT, orthogonal_steps, shared_value_direction
from suture.methods.shared.subject_words import common_last_words, subject_word_gram


def _written_rows(handle: ModelHandle, rows: list[EditRequest]) -> list[bool]:
    """Per row, whether its whole target is the greedy answer on its prompt, token by token."""
    _probs, greedy = target_token_checks(handle, rows)
    return [all(tokens) for tokens in greedy]


def _all_written(handle: ModelHandle, requests: list[EditRequest]) -> bool:
    """Whether every request's target is already the greedy answer on its rewrite prompt, every token."""
    return all(_written_rows(handle, requests))


def _least_write_check(handle: ModelHandle, requests: list[EditRequest], templates: list[str], spec: LeastWrite,
                       written_at_one: bool | None) -> tuple[Callable[[], bool], bool | None]:
    """The check `least_written_scale` shrinks the edit against, called with the full edit in the weights,
    and whether the full edit passes it (None: not known yet). Plain: every target written on its rewrite
    prompt. With `spec.contexts`: also, inside each context template, every row written at full scale."""
    if not spec.contexts:
        return (lambda: _all_written(handle, requests)), written_at_one
    rows, owners = requests_in_contexts(handle.tokenizer, requests, templates)
    bare = [i for i, owner in enumerate(owners) if i == 0 or owners[i - 1] != owner]  # each request's "{}" row
    at_one = _written_rows(handle, rows)

    def still_written() -> bool:
        now = _written_rows(handle, rows)
        return all(now[i] for i in bare) and all(now_ok or not was_ok for now_ok, was_ok in zip(now, at_one))

    return still_written, all(at_one[i] for i in bare)


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


@register_method
class Memit(EditMethod):
    name = "memit"
    hparams_model = MemitHParams

    def default_hparams(self, handle: ModelHandle) -> MemitHParams:
        return MemitHParams(layers=default_layers(handle.sites.family, handle.n_layers))

    def check_hparams(self, handle: ModelHandle, hparams: MemitHParams) -> None:
        bad = [layer for layer in hparams.layers if not 0 <= layer < handle.n_layers]
        if bad:
            raise InvalidHyperparametersError(
                f"memit: hyperparameter 'layers': {bad} outside 0..{handle.n_layers - 1}")
        if sorted(set(hparams.layers)) != hparams.layers:
            raise InvalidHyperparametersError("memit: hyperparameter 'layers': must be strictly increasing")
        if hparams.preserve_earlier is not None and hparams.null_space is not None:
            raise InvalidHyperparametersError(
                "memit: hyperparameter 'preserve_earlier': null_space already carries earlier edits' keys; "
                "give one of the two")
        if hparams.preserve_mean_key is not None and hparams.null_space is not None:
            raise InvalidHyperparametersError(
                "memit: hyperparameter 'preserve_mean_key': null_space already keeps the update off the key "
                "covariance's leading directions, where the mean key lies; give one of the two")
        running = hparams.running_covariance
        if running is not None and running.texts is not None and running.texts > hparams.corpus.n_samples:
            raise InvalidHyperparametersError(
                f"memit: hyperparameter 'running_covariance.texts': {running.texts} exceeds the corpus's "
                f"{hparams.corpus.n_samples} texts (corpus.n_samples)")
        if hparams.rounds_until_written and hparams.rounds == 1:
            raise InvalidHyperparametersError(
                "memit: hyperparameter 'rounds_until_written': stops further rounds, but rounds is 1; "
                "give rounds > 1 (the most rounds to run)")
        # Both act on each value step's direction, which Adam's per-coordinate rescaling would undo.
        step_options = [name for name, given in (("orthogonal_to_shared_value", hparams.orthogonal_to_shared_value),
                                                 ("value_metric", hparams.value_metric is not None)) if given]
        if step_options and hparams.objective.optimizer != "normalized_gradient":
            raise InvalidHyperparametersError(
                f"memit: hyperparameter '{step_options[0]}': needs objective.optimizer 'normalized_gradient' "
                "(Adam rescales every coordinate of a step, which would undo it)")
        if not handle.sites.mlp_out_adds_to_residual and len(hparams.layers) > 1:
            raise InvalidHyperparametersError(
                f"memit: hyperparameter 'layers': the {handle.sites.family} family normalizes MLP outputs before "
                "the residual stream, so updates of several layers do not add up; give a single layer "
                "(or use rome)")

    def request_groups(self, requests: list[EditRequest], hparams: MemitHParams) -> list[list[int]]:
        if hparams.group_size is None:
            return super().request_groups(requests, hparams)
        return packed_key_groups(requests, hparams.group_size)

    def compute(self, ctx: EditContext, requests: list[EditRequest], hparams: MemitHParams) -> MethodOutput:
        ctx.second_moment(hparams.layers, hparams.corpus)  # statistics fail before the costly values
        if hparams.preserve_mean_key is not None:
            ctx.mean_key(hparams.layers, hparams.corpus)
        delta, details = self.target_deltas(ctx, requests, hparams)
        output = self.spread(ctx, requests, delta, hparams)
        output.details = {**details, **output.details}
        if hparams.orthogonal_to_shared_value:
            output.artifacts[ARTIFACT] = torch.nn.functional.normalize(delta, dim=1).cpu()
        return output

    def target_deltas(self, ctx: EditContext, requests: list[EditRequest],
                      hparams: MemitHParams) -> tuple[torch.Tensor, dict]:
        """Step 1: the residual δ [n, d] each request needs at the top layer's site, chunk by chunk (the
        costly part: a value optimization per chunk), norm-anchored if asked; with the details to report.
        It depends on the top layer, the templates, the objective and the anchor, not on the lower layers
        or the covariance weight, so a sweep of those can reuse it (benchmarks/memit_sweep.py)."""
        handle, top = ctx.handle, hparams.layers[-1]
        templates = ctx.templates(hparams.templates)
        details: dict = {}
        deltas, init_values = [], []
        chunks = list(_chunks(requests, hparams.chunk_size))
        details["value_steps"] = []  # per chunk: where an edit's time goes (benchmarks/sequential.py)
        fisher = self._step_metric(ctx, hparams)
        this_call: list[torch.Tensor] = []  # unit values of the chunks done, for the shared direction
        for i, chunk in enumerate(chunks):
            metric = fisher
            if hparams.orthogonal_to_shared_value:
                shared = shared_value_direction(ctx, this_call)
                if i == 0:
                    details["shared_value_direction"] = shared is not None  # False: too few earlier values yet
                details["shared_value_chunks"] = details.get("shared_value_chunks", 0) + (shared is not None)
                if shared is not None:
                    metric = orthogonal_steps(shared.to(handle.device), fisher)
            solution = optimize_values(handle, top, chunk, templates, hparams.objective, step_metric=metric)
            if hparams.orthogonal_to_shared_value:
                this_call.append(torch.nn.functional.normalize(solution.deltas, dim=1))
            deltas.append(solution.deltas)
            init_values.append(solution.init_values)
            details["value_steps"].append(solution.steps)
            ctx.report("value", (i + 1) / len(chunks))
        delta = torch.cat(deltas)
        if hparams.norm_anchor is not None:
            def solve(probes):  # the values MEMIT writes for the probes at its top layer, on the base weights
                # the anchor is cached per settings: the probes take no direction of this session's ledger
                found = optimize_values(handle, top, probes, templates, hparams.objective, step_metric=fisher)
                return found.init_values, found.deltas

            metric_spec = None if hparams.value_metric is None else hparams.value_metric.model_dump(mode="json")
            key = json.dumps(["memit", top, hparams.objective.model_dump(mode="json"), metric_spec,
                              hparams.templates.model_dump(mode="json"), hparams.corpus.model_dump(mode="json")])
            anchor = anchor_norm(ctx, top, hparams.corpus, hparams.norm_anchor, key, solve)
            delta, details["norm_anchor"] = anchor_deltas(delta, torch.cat(init_values), anchor,
                                                          hparams.norm_anchor, [r.label for r in requests])
        return delta, details

    @staticmethod
    def _step_metric(ctx: EditContext, hparams: MemitHParams) -> torch.Tensor | None:
        """The value steps' metric: the output Fisher averaged over the layers, each of which writes a share
        of δ into its MLP output (None: plain steps)."""
        if hparams.value_metric is None:
            return None
        fishers = ctx.output_fisher(hparams.layers, hparams.corpus, hparams.value_metric.n_texts)
        mean = torch.stack([fishers[layer] for layer in hparams.layers]).mean(0)
        return natural_step(mean, hparams.value_metric.damping)

    def spread(self, ctx: EditContext, requests: list[EditRequest], delta: torch.Tensor,
               hparams: MemitHParams) -> MethodOutput:
        """Step 2: each layer in turn takes its share of what is still missing of `delta` [n, d] at the
        top layer's site, solved in closed form against its key covariance; with `rounds` > 1 the pass over
        the layers repeats on the weights written so far (one delta per layer and round). The deltas are not
        applied."""
        handle, layers, top = ctx.handle, hparams.layers, hparams.layers[-1]
        mom2 = ctx.second_moment(layers, hparams.corpus)
        shift = None
        if hparams.running_covariance is not None:  # measured before this edit's deltas enter the weights
            mom2, shift = running_second_moment(ctx, layers, hparams.corpus, hparams.running_covariance)
        templates = ctx.templates(hparams.templates)
        chunks = list(_chunks(requests, hparams.chunk_size))
        # Where the target is measured: the residual stream after the top block, to which every layer's
        # MLP output adds; with a single layer, the MLP output itself (exact on every family).
        site = handle.sites.mlp_out_path(top) if len(layers) == 1 else f"{handle.sites.layers}.{top}"
        targets = output_at_subject(handle, site, requests) + delta
        out, kept_keys = [], {}
        held_words = [] if hparams.preserve_subject_words is None else common_last_words(handle.tokenizer, requests)
        total = hparams.rounds * len(layers)
        rounds_done = 0
        written = None  # whether the weights as they are now were found to write every target (None: unchecked)
        with ctx.weights.trial() as trial:
            for round_index in range(hparams.rounds):
                if round_index and hparams.rounds_until_written:
                    written = _all_written(handle, requests)
                    if written:
                        break
                for position, layer in enumerate(layers):
                    keys = torch.cat([compute_keys(handle, [layer], c, templates)[layer] for c in chunks])
                    missing = targets - output_at_subject(handle, site, requests)
                    share = missing / (len(layers) - position)
                    words = subject_word_gram(handle, layer, held_words)
                    left, right = self._factors(ctx, layer, keys, share, mom2[layer], hparams, words)
                    layer_delta = WeightDelta.low_rank(handle.sites.mlp_out_path(layer), left, right,
                                                       transposed=handle.sites.weights_transposed)
                    trial.apply([layer_delta])
                    written = None
                    out.append(layer_delta)
                    kept_keys[layer] = keys.cpu()  # the last round's: the keys the written weights answer to
                    ctx.report("layers", (round_index * len(layers) + position + 1) / total)
                rounds_done += 1
            scale = None
            if hparams.least_write is not None:
                check, written = _least_write_check(handle, requests, templates, hparams.least_write, written)
                scale = least_written_scale(trial, out, check, hparams.least_write, written_at_one=written)
                out = [delta.scaled(scale) for delta in out]
            ctx.report("layers", 1.0)
            final_missing = targets - output_at_subject(handle, site, requests)
        residual_left = float(final_missing.norm(dim=1).mean() / delta.norm(dim=1).mean().clamp_min(1e-12))
        details = {"residual_left": residual_left, "rounds": rounds_done}
        if shift is not None:
            details["running_covariance"] = shift  # ledger entries when measured; ‖C_t - C₀‖/‖C₀‖ per layer
        if scale is not None:
            details["write_scale"] = scale  # the edit as written, against what the solves gave (1)
        if hparams.preserve_subject_words is not None:
            details["subject_words"] = held_words  # the words held (empty: the option changed nothing)
        return MethodOutput(out, details, artifacts={"keys": kept_keys})

    def _factors(self, ctx: EditContext, layer: int, keys, share, mom2, hparams: MemitHParams,
                 word_gram: torch.Tensor | None = None):
        """The layer's update; `word_gram` (K_wK_wᵀ of the subjects' last words, or None) is held with weight
        `preserve_subject_words` beside the earlier edits' keys, and the mean key with `preserve_mean_key`·λ."""
        words = None if word_gram is None else hparams.preserve_subject_words * word_gram
        if hparams.null_space is None:
            weight = hparams.mom2_weight_per_dim * mom2.shape[0]
            gram = earlier_keys_gram(ctx, layer) if hparams.preserve_earlier is not None else None
            if gram is not None:
                gram = hparams.preserve_earlier * gram
            mean = None
            if hparams.preserve_mean_key is not None:
                mu = ctx.mean_key(hparams.layers, hparams.corpus)[layer].double()
                mean = hparams.preserve_mean_key * weight * torch.outer(mu, mu)
            held = sum_grams(gram, words, mean)
            return memit_factors(keys, share, mom2, weight, held)
        projector = cached_projector(ctx, layer, mom2, hparams.null_space)
        earlier = earlier_keys_gram(ctx, layer)
        return null_space_factors(keys, share, projector, sum_grams(earlier, words), hparams.null_space)
