"""The prefix-sharing scorer against one full forward pass per (prompt, target) pair, on tiny models of
every family (absolute and rotary positions, grouped-query attention, a sliding window shorter than the
prompts, a logit soft cap)."""

import pytest
import torch
from tiny import FAMILIES, tiny_model

from suture.editor import Editor
from suture.editor.errors import InvalidInputError
from suture.evaluation import score_pairs

PROMPTS = ["The capital of Italy is", "Because the weather was nice, we walked to the", "You",
           "Toko Yasuda plays the"]
TARGETS = ["Rome", "nice and warm", "can find the answer", "guitar", "London and Berlin"]


def full_pass_scores(model, tok, prompt: str, target: str) -> tuple[float, list[int]]:
    """Sum of target-token log-probabilities and teacher-forced argmax, from one pass over prompt + target."""
    prompt_ids = tok(prompt)["input_ids"]
    target_ids = tok(" " + target, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + target_ids], device=model.device)).logits[0].float()
    at = logits[len(prompt_ids) - 1: len(prompt_ids) - 1 + len(target_ids)]
    logp = torch.log_softmax(at, -1)
    return float(sum(logp[i, t] for i, t in enumerate(target_ids))), at.argmax(-1).tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prefix_scores_equal_full_pass_scores(family):
    model, tok = tiny_model(family)
    editor = Editor.from_model(model, tok)
    # every prompt with several targets (one and several tokens), in mixed order, and a repeated pair
    pairs = [(p, t) for t in TARGETS for p in PROMPTS] + [(PROMPTS[0], TARGETS[0])]
    scores = score_pairs(editor.handle, pairs, batch_size=3)
    for (prompt, target), logprob, predicted in zip(pairs, scores.logprob, scores.predicted, strict=True):
        expected, argmax = full_pass_scores(model, tok, prompt, target)
        assert float(logprob) == pytest.approx(expected, abs=1e-4)
        assert predicted == argmax


def test_prompt_without_tokens_is_refused():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    with pytest.raises(InvalidInputError, match="pairs\\[1\\]"):
        score_pairs(editor.handle, [("You", "can"), ("", "can")])
