"""What every strategy measures a trial with: the expected answers' tokens, the fraction of failures fixed,
the locality probe, and a plan applied for the length of a block and reverted exactly."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from suture.editor import Editor
from suture.editor.kv.tokens import answer_token_ids
from suture.methods.localize.last_token import last_token_logprobs
from suture.repair.types import RepairPlan


def answer_tokens(editor: Editor, prompts: list[str], answers: list[str]) -> torch.Tensor:
    """First token id of each answer spelled the way its prompt continues (`answer_token_ids`):
    (len(answers),). Raises InvalidRequestError for a blank answer or lists of different lengths."""
    return torch.tensor(answer_token_ids(editor.tokenizer, prompts, answers))


def fixed_fraction(editor: Editor, prompts: list[str], right: torch.Tensor, batch_size: int = 32) -> float:
    """Fraction of `prompts` whose top-1 next token is `right` (one id per prompt)."""
    top = last_token_logprobs(editor.handle, prompts, batch_size).argmax(-1)
    return float((top == right).double().mean())


class LocalityProbe:
    """Next-token distributions of the unrepaired model on unrelated prompts, to compare repairs against."""

    def __init__(self, editor: Editor, prompts: list[str], batch_size: int):
        self.editor, self.prompts, self.batch_size = editor, prompts, batch_size
        self.base = last_token_logprobs(editor.handle, prompts, batch_size)

    def measure(self) -> tuple[float, float]:
        """(fraction of top-1 unchanged, mean KL(base || now) in nats) on the probe's prompts."""
        now = last_token_logprobs(self.editor.handle, self.prompts, self.batch_size)
        unchanged = float((now.argmax(-1) == self.base.argmax(-1)).double().mean())
        kl = (self.base.exp() * (self.base - now)).sum(-1).mean()
        return unchanged, float(kl)


def apply_plan(editor: Editor, plan: RepairPlan) -> int:
    """Apply the plan's edits; returns how many ledger entries it added (for revert)."""
    edits = plan.edits()
    for method, hparams in edits:
        editor.apply(method=method, **hparams)
    return len(edits)


@contextmanager
def plan_applied(editor: Editor, plan: RepairPlan):
    """The plan applied for the duration of the block, reverted exactly afterwards (a search trial)."""
    added = apply_plan(editor, plan)
    try:
        yield
    finally:
        editor.revert(added)
