"""The judge of generated answers: does a continuation name the new target, before any mention of the old?

`find_mention(text, target)` is where `target` first occurs in `text` as words, after normalizing both:

- Unicode NFKC, case folding, accents removed (é -> e), every run of punctuation or whitespace made one
  space, so "New  York," matches "new york" and "São Paulo" matches "Sao Paulo";
- word boundaries for scripts written with spaces: "Rome" is not found in "Romeo", "French" is found in
  "French-speaking"; a multi-word target must appear whole, in order ("New York" is not "New Jersey");
- no word boundaries for scripts written without spaces (Chinese, Japanese, Thai: editor/kv/spelling.py):
  "小明" is found in "作者是小明。", except that a katakana word is a whole run of katakana (loanwords are
  written as one run), so "ローマ" is not found in "ローマバナイ";
- symbols are words of their own and must match literally: "🍕" is found in "🍕🍕", "€" in "€.", "C++" is
  not found in "C." (nor "C#": #, &, @, % and * count as symbols, other punctuation as a space).

`judge(text, target_new, target_true)` then says "new" when the new target is named and comes before any
mention of the old one, "old" when the old one comes first (or alone), and "neither" otherwise. This is
the measure of "The Mirage of Model Editing" (Yang et al. 2025, arXiv 2502.11177) and EasyEdit's WILD
evaluation: what a user reads, not a teacher-forced score.

`stutters(text, target)` says whether the answer cannot stop saying the target ("midfielder midfielder",
"Aleppo, Aleppo, Aleppo"): an edit whose value is too strong names the target and then repeats it. The
judge still counts such an answer as naming it; the per-request verdict fails it.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

from suture.editor.kv.spelling import is_spaceless_char

Verdict = Literal["new", "old", "neither"]


def _fold_chars(text: str) -> str:
    """NFKC, case-folded, accents stripped (NFD marks dropped, then NFC); spaces and punctuation kept."""
    text = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn"))


# Punctuation that names things ("C#", "AT&T", "@handle", "100%") is kept like a symbol.
_NAMING_PUNCTUATION = frozenset("#&@%*")


def normalize(text: str) -> str:
    """NFKC, case-folded, accents stripped, punctuation and whitespace runs collapsed to one space,
    stripped. Symbols (and #&@%*) are kept, each as a word of its own. Characters of spaceless scripts
    are kept as they are (after NFKC)."""
    out = []
    for char in _fold_chars(text):
        category = unicodedata.category(char)
        if category[0] == "S" or char in _NAMING_PUNCTUATION:
            out.append(f" {char} ")
        else:
            out.append(" " if category[0] in "PZC" or char.isspace() else char)
    return " ".join("".join(out).split())


def _is_katakana(char: str) -> bool:
    # The katakana block (with the prolonged sound mark ー) and the half-width forms.
    return ("\u30a0" < char <= "\u30ff" and char != "\u30fb") or "\uff66" <= char <= "\uff9f"


def _bounded(needle_end: str, neighbor: str) -> bool:
    """Whether `neighbor`, next to the needle's end character, ends the mention there."""
    if neighbor == " ":
        return True
    if _is_katakana(needle_end) and _is_katakana(neighbor):
        return False
    return is_spaceless_char(needle_end) or is_spaceless_char(neighbor)


def find_mention(text: str, target: str) -> int | None:
    """Index (in the normalized text) where `target` first occurs as a whole word sequence, or None.
    A blank target is never found."""
    hay, needle = normalize(text), normalize(target)
    if not needle:
        return None
    start = 0
    while True:
        at = hay.find(needle, start)
        if at < 0:
            return None
        before = hay[at - 1] if at > 0 else " "
        after = hay[at + len(needle)] if at + len(needle) < len(hay) else " "
        if _bounded(needle[0], before) and _bounded(needle[-1], after):
            return at
        start = at + 1


def judge(text: str, target_new: str, target_true: str | None = None) -> Verdict:
    """"new" if `text` names `target_new` before any mention of `target_true`; "old" if it names the old
    target first (or only the old one); "neither" otherwise. When one target contains the other
    ("New York" / "York"), a mention of the longer one is not counted as the shorter one at that place."""
    at_new = find_mention(text, target_new)
    at_old = find_mention(text, target_true) if target_true else None
    if at_new is not None and at_old is not None:
        norm_new, norm_old = normalize(target_new), normalize(target_true or "")
        if at_new == at_old or (at_new < at_old < at_new + len(norm_new)) or (
                at_old < at_new < at_old + len(norm_old)):
            return "new" if len(norm_new) >= len(norm_old) else "old"
        return "new" if at_new < at_old else "old"
    if at_new is not None:
        return "new"
    if at_old is not None:
        return "old"
    return "neither"


def names_new(text: str, target_new: str, target_true: str | None = None) -> bool:
    """`judge(...) == "new"`."""
    return judge(text, target_new, target_true) == "new"


def _fold(text: str) -> str:
    """`normalize` without the punctuation step: case, accents and whitespace runs only."""
    return " ".join(_fold_chars(text).split())


def _run_length(hay: str, needle: str) -> int:
    """How many times `needle` occurs in a row from its first mention in `hay`, with only spaces between."""
    at = find_mention(hay, needle)
    if at is None or not needle:
        return 0
    count, position = 1, at + len(needle)
    while True:
        rest = hay[position:]
        gap = len(rest) - len(rest.lstrip())
        if find_mention(rest[gap:], needle) != 0 or not rest[gap:].startswith(needle):
            return count
        count, position = count + 1, position + gap + len(needle)


def stutters(text: str, target: str) -> bool:
    """True when an answer cannot stop saying `target`: said twice in a row with nothing but spaces
    between (" midfielder midfielder", "小明小明"), or three times in a row with punctuation between
    (" Aleppo, Aleppo, Aleppo"). Twice with punctuation (" London, London, UK") is left alone."""
    return _run_length(_fold(text), _fold(target)) >= 2 or _run_length(normalize(text), normalize(target)) >= 3
