"""How a target is spelled after its prompt: with a leading space or without one.

Byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM2, Qwen) carry the space between words inside the next
word's token (" Paris"), so an answer that follows "The capital of France is" must be trained and scored
as " Paris". Forcing that space everywhere is wrong in three places, which `target_separator` decides:

- the prompt already ends in whitespace ("Q: ...\\nA: ", a chat template's assistant header ending in a
  newline): a second space would train the model to write a double space;
- the prompt ends with a special token (a chat turn marker): the answer starts the turn, no space;
- the target or the prompt's last character belongs to a script written without spaces (Han, Hiragana,
  Katakana, Thai, Lao, Khmer, Myanmar, Tibetan): "西游记的作者是" is followed by "吴承恩", not " 吴承恩".

`EditRequest.target_space` (True/False) overrides the rule. `encode_target` then reads the target's token
ids from the tokenizer as they come after the prompt in running text (tokenizing prompt + separator +
target and keeping what follows the prompt's tokens), so the split is the one the model reads.
"""

from __future__ import annotations

import unicodedata

# Unicode script blocks of writing systems that put no spaces between words (start, end inclusive).
_NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi
    (0x3000, 0x30FF),  # CJK symbols and punctuation, Hiragana, Katakana
    (0x3100, 0x31FF),  # Bopomofo, Kanbun, Katakana extensions
    (0x3200, 0x9FFF),  # enclosed CJK, CJK extension A, CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF00, 0xFFEF),  # half- and full-width forms (Japanese punctuation, half-width katakana)
    (0x20000, 0x3134F),  # CJK extensions B-G
)


def is_spaceless_char(char: str) -> bool:
    """True when `char` belongs to a script written without spaces between words (Chinese, Japanese,
    Thai, ...). Korean Hangul uses spaces and is not included."""
    code = ord(char)
    return any(start <= code <= end for start, end in _NO_SPACE_RANGES)


def target_separator(prompt_text: str, target: str, tokenizer=None, override: bool | None = None) -> str:
    """" " or "": what goes between `prompt_text` (the filled prompt) and `target` in running text.

    `override` (a request's `target_space`) wins. Otherwise no space after a prompt ending in whitespace
    or in one of the tokenizer's special tokens (a chat turn's start), and none when the target's first
    or the prompt's last character is in a script written without spaces; a space everywhere else.
    """
    if override is not None:
        return " " if override else ""
    body = target.strip()
    if not prompt_text or prompt_text[-1].isspace():
        return ""
    if tokenizer is not None:
        specials = [s for s in getattr(tokenizer, "all_special_tokens", []) or [] if s]
        if any(prompt_text.endswith(s) for s in specials):
            return ""
    first = unicodedata.normalize("NFC", body)[:1]
    if first and is_spaceless_char(first):
        return ""
    if is_spaceless_char(prompt_text.rstrip()[-1:] or " "):
        return ""
    return " "
