"""Greedy generation as a user reads it: batched, with a KV cache, stopping each row at a natural end.

A row stops at the first of: the end of a line, the end of a sentence (".", "!", "?" followed by
whitespace, or "。", "！", "？"), the model's end-of-sequence / end-of-turn token, or the token budget.
The returned text is cut at that end (the sentence's final mark is kept, the newline is not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from suture.editor.errors import InvalidInputError
from suture.editor.lengths import context_length

# A sentence end followed by whitespace, a full-width sentence end, or a newline.
_STOP = re.compile(r"[.!?](?=\s)|[。！？]|\n")
STOP_MODES = ("sentence", "line", "budget")


def cut_at_stop(text: str, mode: str = "sentence") -> str:
    """`text` up to its natural end under `mode`: "sentence" (line or sentence end), "line" (line end
    only) or "budget" (no cut)."""
    if mode == "budget":
        return text
    pattern = _STOP if mode == "sentence" else re.compile(r"\n")
    match = pattern.search(text)
    if match is None:
        return text
    return text[: match.end()].rstrip("\n") if match.group() != "\n" else text[: match.start()]


class _NaturalStop(StoppingCriteria):
    """Per row: done once the generated text (decoded from `start`) has reached its natural end."""

    def __init__(self, tokenizer, start: int, mode: str):
        self.tokenizer, self.start, self.mode = tokenizer, start, mode

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        done = [cut_at_stop(t, self.mode) != t for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@dataclass
class Generation:
    prompt: str
    text: str  # the continuation, cut at its natural end
    tokens: int  # tokens generated before stopping


def end_token_ids(tokenizer, model=None) -> list[int]:
    """End-of-sequence and end-of-turn ids: the tokenizer's eos, the model's generation config eos, and
    chat turn markers the vocabulary has (<|im_end|>, <|eot_id|>, <end_of_turn>, <|end|>)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in config_eos if isinstance(config_eos, list) else [config_eos]:
        if value is not None:
            ids.add(int(value))
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>"):
        if marker in vocab:
            ids.add(int(vocab[marker]))
    return sorted(ids)


def without_cut_character(text: str) -> str:
    """`text` without the U+FFFD a byte-level decoder writes for a character the token budget cut in two (a
    CJK answer came out as '罗马主�')."""
    return text.rstrip("\ufffd")


def refuse_unusable_prompts(prompts, max_new_tokens: int, context: int | None = None) -> None:
    """InvalidInputError naming the entry for what generation cannot take: a non-list, a non-string or
    blank prompt (it encodes to no token on tokenizers without a BOS), or a budget under one token or over
    the model's `context` (in tokens; None: unknown). A budget of 10^20 tokens ran until killed."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise InvalidInputError(f"prompts: expected a list of strings, got {type(prompts).__name__}")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError(f"prompts[{i}]: expected a non-blank string, got {prompt!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidInputError(f"max_new_tokens: must be at least 1, got {max_new_tokens}")
    if context is not None and max_new_tokens > context:
        raise InvalidInputError(f"max_new_tokens: {max_new_tokens} is more than the model's context of {context} "
                                "tokens")


@torch.no_grad()
def generate_greedy(handle, prompts: list[str], max_new_tokens: int = 24, stop: str = "sentence",
                    batch_size: int = 32, add_special_tokens: bool = True) -> list[Generation]:
    """Greedy continuations of `prompts` (left-padded batches of `batch_size`, KV cache), each cut at its
    natural end (`stop`: "sentence", "line" or "budget"). Prompts already rendered through a chat
    template should pass `add_special_tokens=False` so no second BOS is added."""
    if stop not in STOP_MODES:
        raise InvalidInputError(f"stop: {stop!r} is not one of {', '.join(STOP_MODES)}")
    refuse_unusable_prompts(prompts, max_new_tokens, context_length(handle.model.config))
    tok, model = handle.tokenizer, handle.model
    ends = end_token_ids(tok, model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else ends[0]
    out: list[Generation] = []
    for begin in range(0, len(prompts), batch_size):
        chunk = prompts[begin: begin + batch_size]
        enc = tok(chunk, return_tensors="pt", padding=True, padding_side="left",
                  add_special_tokens=add_special_tokens).to(handle.device)
        start = enc["input_ids"].shape[1]
        criteria = StoppingCriteriaList([_NaturalStop(tok, start, stop)]) if stop != "budget" else None
        ids = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=ends,
                             pad_token_id=pad, stopping_criteria=criteria, top_p=None, top_k=None,
                             temperature=None)
        new = ids[:, start:]
        for prompt, row in zip(chunk, new.tolist()):
            length = next((i for i, t in enumerate(row) if t in ends), len(row))
            text = without_cut_character(tok.decode(row[:length], skip_special_tokens=True))
            out.append(Generation(prompt=prompt, text=cut_at_stop(text, stop), tokens=length))
    return out
