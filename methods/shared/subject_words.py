"""Keys of an edited subject's last word used on its own, to hold fixed in a layer's solve.

A ROME/MEMIT update reads the key at the subject's last token. At the low layers these methods edit, that
key is still mostly the token itself, so an edit of "Laurent Cars" also writes where a text says "Electric
cars" (in a sequential run on SmolLM2 that one edit carried 36% of the drift after 45 edits,
BENCHMARKS.md). Adding the word's keys in a few generic contexts to the solve's preserved term, as earlier
edits' keys are added (Δ = R Kᵀ(λC + w·K_wK_wᵀ + KKᵀ)⁻¹), makes the update read what tells the subject
apart from the word.

Which words: the last word of a subject of two or more words (a one-word subject's other uses are uses of
the subject), in lower case, and only when the tokenizer spells it after a space as one token, i.e. a word
common enough for the vocabulary to hold it whole ("cars", "films", "brown"). A rare surname
("Naughtie", "Amdahl") splits into pieces; text that uses it alone mostly means the subject ("Amdahl
said"), where the edit should generalize, and holding it cost efficacy and drift on SmolLM2 (BENCHMARKS.md).
"""

from __future__ import annotations

import torch

from suture.editor import EditRequest
from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import capture_input, hooks, run_until_stopped
from suture.editor.kv.tokens import build_batch

# What may come before the word in ordinary text. Causal attention: the key at the word's last token
# depends only on what precedes it, so only prefixes vary. No empty prefix: a text's first token has
# collapsed activations on many models, a key no ordinary text reads.
GENERIC_PREFIXES = ("The {}", "the {}", "a {}", "and {}", "of the {}", "In the {}", "many {}", "my {}")


def last_word(subject: str) -> str | None:
    """The subject's last whitespace-separated word, if it has two or more; else None."""
    words = subject.split()
    return words[-1] if len(words) >= 2 else None


def common_last_words(tokenizer, requests: list[EditRequest]) -> list[str]:
    """The distinct last words of the requests' subjects, in lower case, that the tokenizer spells after a
    space as a single token (see the module docstring)."""
    found: dict[str, None] = {}
    for request in requests:
        word = last_word(request.subject)
        if word is None:
            continue
        word = word.strip(".,;:!?()[]\"'").lower()
        if word and len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1:
            found[word] = None
    return list(found)


@torch.no_grad()
def subject_word_gram(handle: ModelHandle, layer: int, requests: list[EditRequest]) -> torch.Tensor | None:
    """Σ k kᵀ [d_in, d_in] (float64) over the keys at `layer` of each request's subject's last word in the
    generic contexts, read on the handle's current weights; None when no subject has such a word."""
    words = common_last_words(handle.tokenizer, requests)
    if not words:
        return None
    texts = [prefix for word in words for prefix in GENERIC_PREFIXES]
    subjects = [word for word in words for _ in GENERIC_PREFIXES]
    batch = build_batch(handle.tokenizer, texts, subjects).to(handle.device)
    sink: list[torch.Tensor] = []
    module = handle.model.get_submodule(handle.sites.mlp_out_path(layer))
    with hooks(capture_input(module, sink, stop=True)):
        run_until_stopped(handle.model, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    rows = torch.arange(batch.input_ids.shape[0], device=handle.device)
    keys = sink[0][rows, batch.subject_last].double()
    return keys.T @ keys
