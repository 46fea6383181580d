"""Prompts that do not fit the model: refused before any work, naming the field and both lengths.

The model's context is read from its config (`max_position_embeddings`, or GPT-2's `n_positions` /
`n_ctx`). A request's rewrite prompt with the subject filled in and target_new after it must fit, and so
must every paraphrase and neighbor with the answer it is scored against (the evaluation reads them).
"""

from __future__ import annotations

from suture.editor.requests import EditRequest, InvalidRequestError

_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


def context_length(config) -> int | None:
    """Longest sequence the model takes, in tokens (None if its config does not say)."""
    for name in _CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _lengths(tokenizer, pairs: list[tuple[str, str]]) -> list[int]:
    if not pairs:
        return []
    texts = tokenizer([t for t, _ in pairs])["input_ids"]
    answers = tokenizer([" " + a.strip() for _, a in pairs], add_special_tokens=False)["input_ids"]
    return [len(t) + len(a) for t, a in zip(texts, answers)]


def refuse_overlong(handle, requests: list[EditRequest]) -> None:
    """Raise InvalidRequestError for the first text (with its answer) longer than the model's context."""
    limit = context_length(handle.model.config)
    if limit is None or not requests:
        return
    where, pairs = [], []
    for i, r in enumerate(requests):
        where.append((i, "prompt", "the prompt with the subject and target_new"))
        pairs.append((r.text, r.target_new))
        answer = r.target_new
        for j, text in enumerate(r.paraphrases):
            where.append((i, f"paraphrases.{j}", "the paraphrase with target_new"))
            pairs.append((text, answer))
        for j, text in enumerate(r.neighbors):
            neighbor_answer = r.neighbor_answers[j] if r.neighbor_answers else (r.target_true or r.target_new)
            where.append((i, f"neighbors.{j}", "the neighbor with its answer"))
            pairs.append((text, neighbor_answer))
    for (i, field, what), length in zip(where, _lengths(handle.tokenizer, pairs)):
        if length > limit:
            raise InvalidRequestError(f"request {i}: field '{field}': {what} is {length} tokens, longer than "
                                      f"the model's context of {limit} tokens")
