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
from suture.editor.kv.keys import keys_at_subject
from suture.editor.kv.tokens import encode_target

# What may come before the word in ordinary text. Causal attention: the key at the word's last token
# depends only on what precedes it, so only prefixes vary. No empty prefix: a text's first token has
# collapsed activations on many models, a key no ordinary text reads. The preserved weight w applies to
# each (word, prefix) key, so the hold's strength grows with this tuple's length.
GENERIC_PREFIXES = ("The {}", "the {}", "a {}", "and {}", "of the {}", "In the {}", "many {}", "my {}")
# Rows per forward pass when reading the words' keys (a batch of a thousand requests has up to 8,000).
ROWS_PER_PASS = 64


def last_word(subject: str) -> str | None:
    """The subject's last whitespace-separated word without surrounding punctuation, in lower case, if the
    subject has two or more words; else None."""
    words = subject.split()
    if len(words) < 2:
        return None
    return words[-1].strip(".,;:!?()[]\"'").lower() or None


def common_last_words(tokenizer, requests: list[EditRequest]) -> list[str]:
    """The distinct last words of the requests' subjects (`last_word`) that the tokenizer spells as a single
    token after "The " in running text (see the module docstring). Read in context, not alone: a
    SentencePiece tokenizer spells a lone " cars" as two pieces, a space and "▁cars"."""
    found: dict[str, None] = {}
    for request in requests:
        word = last_word(request.subject)
        if word and len(encode_target(tokenizer, word, " ", prompt="The")) == 1:
            found[word] = None
    return list(found)


@torch.no_grad()
def subject_word_gram(handle: ModelHandle, layer: int, words: list[str]) -> torch.Tensor | None:
    """Σ k kᵀ [d_in, d_in] (float64) over the keys at `layer` of each word (`common_last_words`) after each
    of GENERIC_PREFIXES, read on the handle's current weights; None when `words` is empty."""
    if not words:
        return None
    templates = [prefix for word in words for prefix in GENERIC_PREFIXES]
    subjects = [word for word in words for _ in GENERIC_PREFIXES]
    gram = None
    for start in range(0, len(templates), ROWS_PER_PASS):
        keys = keys_at_subject(handle, [layer], templates[start: start + ROWS_PER_PASS],
                               subjects[start: start + ROWS_PER_PASS])[layer].double()
        gram = keys.T @ keys if gram is None else gram + keys.T @ keys
    return gram
