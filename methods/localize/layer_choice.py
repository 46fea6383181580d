"""Pick the layer to edit by causal tracing: the MLP whose restored output at the subject's last token
brings back the most of the fact's probability (the ROME paper's criterion), averaged over probe facts.

The probe facts are well-known ones; those the model does not know (clean P(target) below
`min_clean_prob`) are left out. The choice is cached per model (weights + config) and probe set.
"""

from __future__ import annotations

import hashlib
import json

import torch
from pydantic import BaseModel

from suture.editor.errors import EditFailedError
from suture.editor.handle import ModelHandle
from suture.editor.paths import cache_dir
from suture.methods.localize.causal_trace import trace

PROBE_FACTS: list[tuple[str, str, str]] = [
    ("The capital of {} is", "France", "Paris"),
    ("The capital of {} is", "Japan", "Tokyo"),
    ("The capital of {} is", "Germany", "Berlin"),
    ("The mother tongue of {} is", "Danielle Darrieux", "French"),
    ("{} is located in the city of", "The Eiffel Tower", "Paris"),
    ("{} is located in the city of", "The Colosseum", "Rome"),
    ("The official language of {} is", "Brazil", "Portuguese"),
    ("{} was developed by", "Windows 10", "Microsoft"),
]


class LayerChoice(BaseModel):
    layer: int
    effects: list[float]  # per layer: mean restored - corrupted P(target) at the subject's last token
    facts_used: int


def choose_edit_layer(handle: ModelHandle, facts: list[tuple[str, str, str]] | None = None, samples: int = 5,
                      min_clean_prob: float = 0.05) -> LayerChoice:
    facts = facts or PROBE_FACTS
    digest = hashlib.sha256(json.dumps([facts, samples, min_clean_prob]).encode()).hexdigest()[:16]
    cached = cache_dir("layer-choice") / f"{handle.cache_key}-{digest}.json"
    if cached.is_file():
        return LayerChoice.model_validate_json(cached.read_text())
    rows = []
    for template, subject, target in facts:
        result = trace(handle, template, subject, target, samples=samples, kinds=("mlp",))
        if result.clean_prob >= min_clean_prob:
            rows.append(result.effect("mlp")[:, result.subject_last])
    if not rows:
        raise EditFailedError("choose_edit_layer: the model knows none of the probe facts (clean probability "
                              f"below {min_clean_prob}); give facts it knows")
    effects = torch.stack(rows).mean(0)
    choice = LayerChoice(layer=int(effects.argmax()), effects=effects.tolist(), facts_used=len(rows))
    cached.write_text(choice.model_dump_json())
    return choice
