"""Minimal-repair search: the fewest attention heads, and the strategy's setting, that repair a failure family.

Given failing prompts with their expected answers and working twins (the same question in a format the
model gets right):

1. rank every query head by last-token activation patching from the twins into the failing prompts
   (effect on logit(right) - logit(wrong), `attribute_heads`);
2. let the configured strategy (steer.py, scale.py, remap.py) grow a head set in rank order, measuring at
   each trial the fraction of failing prompts fixed (top-1 = expected answer) and the locality cost on
   unrelated prompts (top-1 unchanged, mean KL of the next-token distribution to the unrepaired model);
3. the repair is the smallest set reaching `target_fixed` with locality at least `min_unchanged`; the
   search goes `extra_sizes` past it so the curve shows the threshold.

Everything is measured on the prompts given here; judge a repair on held-out prompts
(benchmarks/head_repair.py). The search leaves the model as it found it; `apply_plan` applies the choice.
"""

from __future__ import annotations

from collections.abc import Callable

from suture.editor import Editor
from suture.editor.errors import InvalidInputError
from suture.methods.localize.head_attribution import HeadAttribution, attribute_heads
from suture.methods.localize.last_token import last_token_logprobs
from suture.repair.config import RepairConfig
from suture.repair.context import SearchContext
from suture.repair.trials import LocalityProbe, answer_tokens
from suture.repair.types import RepairResult


def rank_heads(editor: Editor, failing: list[str], answers: list[str], twins: list[str],
               wrong: list[str] | None = None, batch_size: int = 32) -> HeadAttribution:
    """Head attribution from the twins into the failing prompts on logit(answer) - logit(wrong); `wrong`
    defaults to each failing prompt's current top-1 token."""
    wrong_ids = (last_token_logprobs(editor.handle, failing, batch_size).argmax(-1) if wrong is None
                 else answer_tokens(editor, failing, wrong)).tolist()
    return attribute_heads(editor.handle, failing, twins, right=answer_tokens(editor, failing, answers).tolist(),
                           wrong=wrong_ids)


def search_repair(editor: Editor, failing: list[str], answers: list[str], twins: list[str], locality: list[str],
                  config: RepairConfig | None = None, wrong: list[str] | None = None,
                  attribution: HeadAttribution | None = None,
                  progress: Callable[[str], None] = print) -> tuple[RepairResult, HeadAttribution]:
    """Search for the smallest head repair of `failing` (see the module docstring).

    Args:
        failing, answers, twins: the failure family, paired by position (answers: the expected text).
        locality: unrelated prompts whose next token must not change; they judge every trial.
        config: thresholds and strategy (default: remap with its default preservation weights).
        wrong: the wrong answers to contrast with (default: each failing prompt's current top-1).
        attribution: a head ranking computed before (skips the patching pass).
    Returns: the result (curve, trials, chosen plan) and the head ranking it used.
    Raises: InvalidInputError when the family's lists differ in length or are empty, an answer is blank,
        locality is empty, or max_heads exceeds the model's heads.
    """
    config = config or RepairConfig()
    if not failing or not (len(failing) == len(answers) == len(twins)):
        raise InvalidInputError(f"failing, answers, twins: need the same non-zero number of entries, got "
                                f"{len(failing)}, {len(answers)}, {len(twins)}")
    if not locality:
        raise InvalidInputError("locality: needs at least one unrelated prompt to judge the repair")
    blank = [i for i, answer in enumerate(answers) if not answer.strip()]
    if blank:
        raise InvalidInputError(f"answers: entry {blank[0]} is blank; give the text each failing prompt should "
                                "continue with")
    total = editor.handle.n_layers * editor.handle.sites.head_layout(editor.model.config).n_heads
    if config.max_heads > total:
        raise InvalidInputError(f"max_heads: {config.max_heads} is more than the model's {total} attention heads")
    if attribution is None:
        attribution = rank_heads(editor, failing, answers, twins, wrong, config.batch_size)
    ctx = SearchContext(editor=editor, failing=failing, twins=twins, answers=answers,
                        right=answer_tokens(editor, failing, answers),
                        attribution=attribution, locality=LocalityProbe(editor, locality, config.batch_size),
                        max_heads=config.max_heads, target_fixed=config.target_fixed,
                        min_unchanged=config.min_unchanged, extra_sizes=config.extra_sizes,
                        batch_size=config.batch_size, progress=progress)
    return config.strategy.search(ctx), attribution
