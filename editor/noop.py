"""Edits that would change nothing: the model already answers `target_new` to the rewrite prompt.

The model's answer is its greedy continuation of `request.text` (the gate and the evaluation read
answers the same way). A request is a no-op when that continuation, leading whitespace aside, starts
with `target_new` (stripped) and the next character does not continue a word: target "Paris" matches
" Paris, the capital" but not " Parisian". `Editor.apply` leaves no-op requests out (and writes nothing
when every request is one) unless called with `force=True`, and reports them in the result's
`details["noop"]`.
"""

from __future__ import annotations

import torch

from suture.editor.requests import EditRequest


@torch.no_grad()
def greedy_continuations(handle, texts: list[str], max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """The model's greedy continuation of each text (decoded, special tokens dropped), in batches."""
    tok, out = handle.tokenizer, []
    for start in range(0, len(texts), batch_size):
        enc = tok(texts[start:start + batch_size], return_tensors="pt", padding=True, padding_side="left")
        enc = enc.to(handle.device)
        ids = handle.model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                    pad_token_id=tok.pad_token_id)
        out += tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def matches_answer(continuation: str, target: str) -> bool:
    """Whether `continuation` begins with the answer `target` as a whole (see the module's rule)."""
    text, answer = continuation.lstrip(), target.strip()
    if not answer or not text.startswith(answer):
        return False
    rest = text[len(answer):]
    return not rest or not (rest[0].isalnum() or rest[0] == "_")


def greedy_answers(handle, requests: list[EditRequest]) -> list[str]:
    """The model's greedy continuation of each request's rewrite prompt, long enough to hold its target."""
    tok = handle.tokenizer
    longest = max(len(tok(" " + r.target_new.strip(), add_special_tokens=False)["input_ids"]) for r in requests)
    return greedy_continuations(handle, [r.text for r in requests], max_new_tokens=longest + 1)


def find_noops(handle, requests: list[EditRequest]) -> list[dict]:
    """[{"request": position, "answer": the model's greedy continuation}] for every request whose target the
    model already gives."""
    if not requests:
        return []
    answers = greedy_answers(handle, requests)
    return [{"request": i, "target_new": r.target_new, "answer": a}
            for i, (r, a) in enumerate(zip(requests, answers)) if matches_answer(a, r.target_new)]


def split_noops(handle, requests: list[EditRequest], force: bool) -> tuple[list[EditRequest], list[dict]]:
    """(the requests to apply, the no-ops left out); with `force` every request is applied."""
    noops = [] if force else find_noops(handle, requests)
    skip = {n["request"] for n in noops}
    return [r for i, r in enumerate(requests) if i not in skip], noops
