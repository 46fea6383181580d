"""Where a target's word ends: the tokens that would carry on the word a target ends with.

A value optimized only for the target's own tokens can leave the model extending the last word: trained
on " sit|com" the edited SmolLM2 said " sitcoms", trained on " ESP|N" it said " ESPNCOPE", and the answer
then names neither target (issue 13; `editor/verdicts.py` fails such requests). The value objective
therefore also asks that the token after the target not continue its word: for a target whose last
character is a letter, digit or combining mark of a script written with spaces, the probability of every
token whose text starts with such a character right there (no space before it) is pushed down. Targets
ending in punctuation or in a script without spaces (Chinese, Japanese: `spelling.is_spaceless_char`)
have no such boundary and are left as they were.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import torch

from suture.editor.kv.spelling import is_spaceless_char


def _continues_a_word(char: str) -> bool:
    if not char or is_spaceless_char(char):
        return False
    return char.isalnum() or unicodedata.category(char).startswith("M")


def ends_in_word(target: str) -> bool:
    """True when `target`'s last character could be continued by another letter (a word boundary is due)."""
    body = unicodedata.normalize("NFC", target.strip())
    return bool(body) and _continues_a_word(body[-1])


@lru_cache(maxsize=8)
def _continuation_ids(tokenizer) -> tuple[int, ...]:
    ids = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if text and _continues_a_word(text[0]) and token_id not in tokenizer.all_special_ids:
            ids.append(token_id)
    return tuple(ids)


def continuation_mask(tokenizer, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[vocab_size] bool: True for the tokens that start with a word character and no space, i.e. that
    would continue the word before them. Computed once per tokenizer (one decode per vocabulary entry)."""
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    ids = [i for i in _continuation_ids(tokenizer) if i < vocab_size]
    mask[ids] = True
    return mask.to(device)
