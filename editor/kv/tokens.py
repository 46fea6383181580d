"""Tokenizing prompts that contain a subject, and finding the subject's last token."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from suture.editor.prompt_template import PromptTemplate, parse_template
from suture.editor.requests import InvalidRequestError


@dataclass
class PromptBatch:
    """Right-padded token ids with, per row, the index of the subject's last token."""

    input_ids: torch.Tensor  # [rows, length]
    attention_mask: torch.Tensor  # [rows, length]
    subject_last: torch.Tensor  # [rows]
    lengths: torch.Tensor  # [rows] unpadded lengths

    def to(self, device: torch.device) -> PromptBatch:
        return PromptBatch(self.input_ids.to(device), self.attention_mask.to(device),
                           self.subject_last.to(device), self.lengths.to(device))

    def select(self, rows: torch.Tensor) -> PromptBatch:
        """The given rows, trimmed to their longest length (right padding keeps every index valid)."""
        width = int(self.lengths[rows].max())
        return PromptBatch(self.input_ids[rows, :width], self.attention_mask[rows, :width],
                           self.subject_last[rows], self.lengths[rows])


def subject_last_index(tokenizer, text: str, subject_start: int, subject_end: int, ids: list[int]) -> int:
    """Index (into `ids`, the tokenization of `text`) of the last token that overlaps the subject."""
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        hits = [i for i, (start, end) in enumerate(offsets) if end > start and start < subject_end]
        if hits:
            return hits[-1]
    # Slow tokenizers: count the tokens of the text up to the subject's end.
    prefix_ids = tokenizer(text[:subject_end])["input_ids"]
    return min(len(prefix_ids), len(ids)) - 1


def encode_target(tokenizer, target: str, separator: str = " ", prompt: str | None = None) -> list[int]:
    """Token ids of an answer as it follows a prompt, no special tokens.

    `separator` goes before the stripped target (default a space, the CounterFact convention; see
    `spelling.target_separator` for the rule that decides it per request). With `prompt` (the filled
    prompt text), the ids are read as the tokenizer splits prompt + separator + target in running text:
    the ids after the prompt's own ids, when those are a prefix (they are unless a token straddles the
    boundary, in which case the target is tokenized on its own).
    """
    if not target.strip():
        raise InvalidRequestError(f"target {target!r} is blank: nothing to predict")
    text = separator + target.strip()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if prompt is not None:
        head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        whole = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
        if len(whole) > len(head) and whole[: len(head)] == head:
            ids = whole[len(head):]
    if not ids:
        raise InvalidRequestError(f"target {target!r} tokenizes to nothing")
    return ids


def spelled_target_ids(tokenizer, prompt: str, target: str, space: bool | None = None) -> list[int]:
    """Ids of `target` spelled the way `prompt` (the filled prompt text) continues: the one rule every reader
    of a target uses (`spelling.target_separator`: no space after a prompt ending in whitespace or a chat
    turn's start, none for scripts written without spaces; `space` overrides it)."""
    from suture.editor.kv.spelling import target_separator

    return encode_target(tokenizer, target, target_separator(prompt, target, tokenizer, space), prompt=prompt)


def request_target_ids(tokenizer, request) -> list[int]:
    """Ids of `request.target_new` spelled the way its prompt continues, overridden by the request's
    `target_space`."""
    return spelled_target_ids(tokenizer, request.text, request.target_new, getattr(request, "target_space", None))


def build_batch(tokenizer, templates: list[PromptTemplate | str], subjects: list[str],
                suffixes: list[list[int]] | None = None) -> PromptBatch:
    """Fill each template's placeholder with its subject (templates parsed by `parse_template`: literal
    braces stay literal), tokenize, append optional suffix ids, right-pad."""
    rows, last = [], []
    for i, (template, subject) in enumerate(zip(templates, subjects)):
        parsed = parse_template(template) if isinstance(template, str) else template
        filled = parsed.fill(subject)
        ids = tokenizer(filled.text)["input_ids"]
        last.append(subject_last_index(tokenizer, filled.text, filled.subject_start, filled.subject_end, ids))
        rows.append(ids + (suffixes[i] if suffixes else []))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    return PromptBatch(input_ids, mask, torch.tensor(last), mask.sum(1))


def answer_token_ids(tokenizer, prompts: list[str], answers: list[str]) -> list[int]:
    """The first token id of each answer spelled the way its prompt continues (`spelled_target_ids`): the
    next token a model should predict after the prompt. One answer per prompt.

    Raises InvalidRequestError when the lists differ in length or an answer is blank.
    """
    if len(prompts) != len(answers):
        raise InvalidRequestError(f"{len(answers)} answers for {len(prompts)} prompts: give one answer per prompt")
    return [spelled_target_ids(tokenizer, prompt, answer)[0] for prompt, answer in zip(prompts, answers)]
