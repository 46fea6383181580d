"""Context prefixes sampled from the model itself, so keys and values generalize beyond one phrasing.

A template looks like "Because the last time we met. {}": the edit prompt is placed where `{}` is. Keys
are averaged over all templates and the value is optimized over the same templates (r-ROME's point:
the key used by the update must be the key the value was optimized for).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field

from suture.editor.handle import ModelHandle
from suture.editor.paths import cache_dir
from suture.editor.progress import generation_stoppers
from suture.editor.prompt_template import parse_template

STARTERS = ("The", "Therefore", "Because", "I", "You")


class TemplateSpec(BaseModel):
    """`groups` lists (tokens to generate, number of prefixes); the bare "{}" is always included."""

    model_config = ConfigDict(extra="forbid")

    groups: list[tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=0)]]] = Field(
        default_factory=lambda: [(10, 5)], description="(tokens per prefix >= 1, number of prefixes >= 0)")
    top_k: int = Field(5, ge=1)
    seed: int = 0
    # Also fit on chat-formatted contexts (models with a chat template): the edit prompt opens the
    # assistant's reply after a user turn, as when a chat user asks for the fact and the model restates it.
    # Off by default: on 50 SmolLM2 tuning records it moved chat answers 0.66 -> 0.70 (noise-level) and
    # paraphrases 0.74 -> 0.80, but cost neighbors 0.754 -> 0.712 and 1.9x the time (BENCHMARKS.md).
    chat: bool = False

    def key(self) -> str:
        dumped = self.model_dump_json(exclude=None if self.chat else {"chat"})  # old keys stay valid
        return hashlib.sha256(dumped.encode()).hexdigest()[:16]


# A prompt that already puts this many tokens before its subject is edited in the bare "{}" template only:
# a ten-token prefix in front of it barely changes the key, and every template row would repeat the whole
# prompt (the cost of a long prompt would be multiplied by the number of templates).
LONG_PROMPT_TOKENS = 64


def templates_for(tokenizer, request, templates: list[str]) -> list[str]:
    """The context templates one request is edited in: all of them, or only the bare "{}" (always the
    first) when its prompt has LONG_PROMPT_TOKENS or more tokens before the subject."""
    filled = request.filled
    before = tokenizer(filled.text[: filled.subject_start])["input_ids"]
    return templates[:1] if len(before) >= LONG_PROMPT_TOKENS else templates


def requests_in_contexts(tokenizer, requests: list, templates: list[str]) -> tuple[list, list[int]]:
    """Each request with its rewrite prompt inside each of its context templates (`templates_for`; the bare
    "{}" first), as requests with the same target, and for each the index of the request it came from."""
    rows, owners = [], []
    for index, request in enumerate(requests):
        prompt = parse_template(request.prompt)
        for template in templates_for(tokenizer, request, templates):
            rows.append(request.model_copy(update={"prompt": prompt.within(template).source}))
            owners.append(index)
    return rows, owners


def _sample(handle: ModelHandle, length: int, count: int, spec: TemplateSpec) -> list[str]:
    tok = handle.tokenizer
    starters = [STARTERS[i % len(STARTERS)] for i in range(count)]
    enc = tok(starters, return_tensors="pt", padding=True, padding_side="left").to(handle.device)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed + 7919 * length + count)
    try:
        out = handle.model.generate(**enc, do_sample=True, top_k=spec.top_k, max_new_tokens=length,
                                    min_new_tokens=length, pad_token_id=tok.pad_token_id,
                                    stopping_criteria=generation_stoppers() or None)
    finally:
        torch.random.set_rng_state(generator_state)
    texts = tok.batch_decode(out, skip_special_tokens=True)
    return [" ".join(t.replace("{", " ").replace("}", " ").split()) + ". {}" for t in texts]


# User turns of the chat contexts; the edit prompt then opens the assistant's reply.
CHAT_USER_TURNS = ("Tell me a fact.", "Finish my sentence.")


def chat_templates(tokenizer) -> list[str]:
    """Chat-formatted contexts "<user turn><assistant header>{}" (none without a chat template). Braces of
    the rendered template are removed so the only placeholder is the edit prompt's."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    out = []
    for user in CHAT_USER_TURNS:
        head = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
        out.append(head.replace("{", "").replace("}", "") + "{}")
    return out


def context_templates(handle: ModelHandle, spec: TemplateSpec) -> list[str]:
    """The templates for `spec`, sampled once per base model and cached on disk."""
    path = cache_dir("templates") / f"{handle.cache_key[:16]}-{spec.key()}.json"
    if path.is_file():
        return json.loads(path.read_text())
    templates = ["{}"]
    for length, count in spec.groups:
        if count > 0:
            templates += _sample(handle, length, count, spec)
    if spec.chat:
        templates += chat_templates(handle.tokenizer)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # a run killed mid-write leaves no truncated cache
    tmp.write_text(json.dumps(templates, indent=1))
    tmp.replace(path)
    return templates
