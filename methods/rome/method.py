"""ROME: one rank-one update of one MLP output projection per fact (Meng et al., 2022), with r-ROME's
fix: the key in the update is the template-averaged key the value was optimized for."""

from __future__ import annotations

import json

import torch

from suture.editor import EditContext, EditMethod, EditRequest, MethodOutput, WeightDelta, register_method
from suture.editor.errors import InvalidHyperparametersError
from suture.editor.handle import ModelHandle
from suture.editor.kv import optimize_values
from suture.methods.rome.hparams import RomeHParams, default_layer
from suture.methods.shared.least_squares import null_space_directions
from suture.methods.shared.norm_anchor import anchor_deltas, anchor_norm
from suture.methods.shared.preserved_keys import cached_projector, earlier_keys_gram, sum_grams
from suture.methods.shared.rank_one import rank_one_factors, read_directions
from suture.methods.shared.subject_words import common_last_words, subject_word_gram

# Below this share of its value, ũ·k in the prompt as written, an edit rarely takes there (measured on
# SmolLM2: reaches of 0.27-0.47 still passed with larger deltas; 0.002-0.007 could not).
REACH_HINT = 0.25


def unreachable_prompt_hint(request: EditRequest, reach: float, bare_key: torch.Tensor, key: torch.Tensor,
                            layer: int) -> str:
    """Why a rank-one update cannot write the fact into the prompt as written: there the key at the
    subject is far from the context-averaged key the update reads (ũ·k* = 1)."""
    where = ("the subject opens the prompt, and at a text's first tokens a model's activations can collapse; "
             "put words before the subject, or edit another layer" if request.filled.subject_start == 0
             else "try another layer or more context templates")
    return (f"layer {layer}'s update reads only {reach:.3f} of its value at the subject in the prompt as "
            f"written (1 in context; key norm {float(bare_key.norm()):.1f} against {float(key.norm()):.1f}): "
            f"{where}")


@register_method
class Rome(EditMethod):
    name = "rome"
    hparams_model = RomeHParams
    one_request_at_a_time = True

    def default_hparams(self, handle: ModelHandle) -> RomeHParams:
        return RomeHParams(layer=default_layer(handle.sites.family, handle.n_layers))

    def resolve_hparams(self, handle: ModelHandle, overrides: dict) -> RomeHParams:
        hparams = super().resolve_hparams(handle, overrides)
        if hparams.layer == "auto":  # the ledger records the layer tracing chose, not "auto"
            from suture.methods.localize.layer_choice import choose_edit_layer

            hparams = hparams.model_copy(update={"layer": choose_edit_layer(handle).layer})
        return hparams

    def check_hparams(self, handle: ModelHandle, hparams: RomeHParams) -> None:
        if hparams.layer == "auto":
            return
        if not 0 <= hparams.layer < handle.n_layers:
            raise InvalidHyperparametersError(
                f"rome: hyperparameter 'layer': {hparams.layer} is outside 0..{handle.n_layers - 1}")

    def compute(self, ctx: EditContext, requests: list[EditRequest], hparams: RomeHParams) -> MethodOutput:
        handle, layer = ctx.handle, hparams.layer
        mom2 = ctx.second_moment([layer], hparams.corpus)[layer]
        templates = ctx.templates(hparams.templates)
        steps = hparams.objective.steps
        directions: dict[str, torch.Tensor] = {}
        held_words = [] if hparams.preserve_subject_words is None else common_last_words(handle.tokenizer, requests)
        words = subject_word_gram(handle, layer, held_words)
        if words is not None:
            words = hparams.preserve_subject_words * words.to(mom2.device)

        def read_direction(keys: torch.Tensor) -> torch.Tensor:
            if hparams.null_space is None:
                held = mom2 if words is None else mom2.double() + words / mom2.shape[0]  # λ = d_in, as MEMIT's
                directions["u"] = read_directions(keys, held, hparams.ridge)
            else:
                projector = cached_projector(ctx, layer, mom2, hparams.null_space)
                earlier = earlier_keys_gram(ctx, layer)
                directions["u"] = null_space_directions(keys, projector, sum_grams(earlier, words),
                                                        hparams.null_space)
            return directions["u"]

        solution = optimize_values(handle, layer, requests, templates, hparams.objective,
                                   progress=lambda step, _loss: ctx.report("value", (step + 1) / steps),
                                   read_direction=read_direction if hparams.optimize_through_update else None)
        direction = directions.get("u")
        if direction is None:
            direction = read_direction(solution.keys)
        residual = solution.deltas
        details: dict = {"target_prob": float(solution.target_prob[0]), "value_steps": solution.steps}
        if hparams.preserve_subject_words is not None:
            details["subject_words"] = held_words  # the words held (empty: the option changed nothing)
        if hparams.norm_anchor is not None:
            def solve_plain(probes):  # the values plain ROME writes for the probes, on the base weights
                through = (lambda keys: read_directions(keys, mom2, hparams.ridge)) \
                    if hparams.optimize_through_update else None
                found = optimize_values(handle, layer, probes, templates, hparams.objective, read_direction=through)
                return found.init_values, found.deltas

            key = json.dumps(["rome", hparams.model_dump(mode="json", exclude={"null_space", "norm_anchor",
                                                                          "preserve_subject_words"})])
            anchor = anchor_norm(ctx, layer, hparams.corpus, hparams.norm_anchor, key, solve_plain)
            residual, records = anchor_deltas(residual, solution.init_values, anchor, hparams.norm_anchor,
                                              [r.label for r in requests])
            details["norm_anchor"] = records[0]
        hints = {}
        reach = float(direction[0].double() @ solution.bare_keys[0].double())
        details["bare_key_reach"] = reach
        if reach < REACH_HINT:
            hints[0] = unreachable_prompt_hint(requests[0], reach, solution.bare_keys[0], solution.keys[0], layer)
        left, right = rank_one_factors(direction[0], residual[0])
        delta = WeightDelta.low_rank(handle.sites.mlp_out_path(layer), left, right,
                                     transposed=handle.sites.weights_transposed)
        details["delta_norm"] = float(residual[0].norm())
        return MethodOutput([delta], details, artifacts={"keys": {layer: solution.keys.cpu()}}, hints=hints)
