"""The prompt template: one syntax and one parser for every reader of it.

A template is a Python format string with exactly one empty field `{}`, where the subject goes; `{{` and
`}}` stand for a literal `{` and `}`. So "In set notation {{}} is the empty set. The capital of {} is"
holds one placeholder and the literal text "{}". Validation (`EditRequest`), `EditRequest.text`, the
tokenization that finds the subject's tokens (`kv/tokens.py`), context templates, the KL prompt and the
dataset loaders all go through `parse_template`, so they cannot disagree about where the subject is.
Named or numbered fields (`{0}`, `{name}`), conversions (`{!r}`) and format specs (`{:>9}`) are refused.

Whitespace policy (normalize, never refuse; the same for text and tokens because both are made from the
normalized request):
- subject: whitespace at either end is removed (spaces, tabs, line breaks, NBSP and the other Unicode
  spaces, and zero-width characters); every run of whitespace inside it becomes one ASCII space
  (zero-width joiners inside it are kept: they belong to some scripts and emoji).
  "France " is "France", "New\u00a0 York" is "New York". The subject's last token is therefore never a
  lone space.
- prompt: whitespace at its start is removed. The run of whitespace directly before the placeholder and
  the one directly after it becomes one ASCII space, or one line break if the run holds a line break
  (chat-style prompts keep their lines); a placeholder at the very start has nothing before it. The
  whitespace at the prompt's end (where the target follows) is left as written.
  "The capital of  {}  is" is "The capital of {} is"; no double space is trained around the subject.
Anything else in the prompt (literal braces included) survives exactly as written.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
_WS = rf"[\s{_ZERO_WIDTH}]"
_LEADING = re.compile(rf"^{_WS}+")
_TRAILING = re.compile(rf"{_WS}+$")


def escape_literal(text: str) -> str:
    """`text` as literal template text: braces doubled."""
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class FilledPrompt:
    """A template with its subject filled in, and where the subject sits (character offsets)."""

    text: str
    subject_start: int
    subject_end: int


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed template: the literal text before and after the subject (braces already unescaped)."""

    before: str
    after: str

    @property
    def source(self) -> str:
        """The template string again (literal braces doubled)."""
        return escape_literal(self.before) + "{}" + escape_literal(self.after)

    def fill(self, subject: str) -> FilledPrompt:
        """The text with `subject` in the placeholder, taken literally (braces in it stay as they are)."""
        start = len(self.before)
        return FilledPrompt(self.before + subject + self.after, start, start + len(subject))

    def within(self, context: str | PromptTemplate) -> PromptTemplate:
        """This template placed in the placeholder of `context` (e.g. a context prefix "Xyz. {}")."""
        outer = parse_template(context) if isinstance(context, str) else context
        return PromptTemplate(outer.before + self.before, self.after + outer.after)


def parse_template(template: str) -> PromptTemplate:
    """Parse a template with exactly one `{}`. Raises ValueError (unbalanced braces, a named field, a
    format spec, no placeholder or more than one) with the reason."""
    if not isinstance(template, str):
        raise ValueError(f"expected a string template, got {type(template).__name__}")
    before: list[str] = []
    after: list[str] = []
    fields = 0
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # "Single '}' encountered in format string" and the like
        raise ValueError(f"not a valid template: {exc}; write a literal brace as '{{{{' or '}}}}'") from None
    for literal, field_name, spec, conversion in parsed:
        (after if fields else before).append(literal)
        if field_name is None:
            continue
        if field_name != "" or spec or conversion:
            shown = "{" + field_name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"only an empty '{{}}' placeholder is allowed, found {shown!r}; write a literal "
                             "brace as '{{' or '}}'")
        fields += 1
    if fields != 1:
        raise ValueError(f"must contain exactly one '{{}}' for the subject, found {fields}")
    return PromptTemplate("".join(before), "".join(after))


def template_from_span(text: str, start: int, end: int) -> str:
    """The template that puts the subject at text[start:end] and keeps everything else literally."""
    return PromptTemplate(text[:start], text[end:]).source


def _subject_pattern(subject: str, flags: int = 0) -> re.Pattern[str]:
    """`subject` as a whole word or words: literal characters (regex metacharacters and braces included),
    any run of whitespace for its inner spaces, and no word character right before or after it."""
    words = [re.escape(w) for w in subject.split()]
    body = rf"{_WS}+".join(words)
    head = r"(?<!\w)" if re.match(r"\w", subject[0]) else ""
    tail = r"(?!\w)" if re.match(r"\w", subject[-1]) else ""
    return re.compile(head + body + tail, flags)


def locate_subject(text: str, subject: str) -> tuple[int, int]:
    """The one place where `subject` occurs in `text` as whole words: (start, end) character offsets.

    The subject is compared after whitespace normalization, and its inner spaces match any whitespace.
    Exact case first; if it never occurs so, a single occurrence that differs only in case is taken (the
    template keeps the text's spelling; the caller should use `text[start:end]` as the subject). Raises
    ValueError when it occurs more than once, only inside other words, or not at all."""
    subject = normalize_subject(subject)
    if not subject:
        raise ValueError("the subject is blank")
    for flags, how in ((0, ""), (re.IGNORECASE, " (ignoring case)")):
        hits = [m.span() for m in _subject_pattern(subject, flags).finditer(text)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            at = ", ".join(str(start) for start, _ in hits)
            raise ValueError(f"the subject {subject!r} occurs {len(hits)} times as a word{how} (at characters "
                             f"{at}); which one is meant is ambiguous")
    inside = re.search(re.escape(subject), text, re.IGNORECASE)
    if inside:
        word = re.search(r"\w*" + re.escape(text[inside.start():inside.end()]) + r"\w*", text)
        shown = word.group() if word else text[inside.start():inside.end()]
        raise ValueError(f"the subject {subject!r} occurs only inside another word ({shown!r} at character "
                         f"{inside.start()})")
    raise ValueError(f"does not contain the subject {subject!r}")


def _one(run: str) -> str:
    """A run of whitespace as one space, or one line break if it holds one ('' if only zero-width)."""
    if "\n" in run or "\r" in run:
        return "\n"
    return " " if any(c.isspace() for c in run) else ""


def normalize_subject(subject: str) -> str:
    """The subject under the whitespace policy above."""
    inner = _TRAILING.sub("", _LEADING.sub("", subject))
    return re.sub(r"\s+", " ", inner)


def normalize_template(template: str) -> str:
    """The template under the whitespace policy above (raises ValueError as `parse_template`)."""
    parsed = parse_template(template)
    before = _LEADING.sub("", parsed.before)
    trailing = _TRAILING.search(before)
    if trailing:
        before = before[: trailing.start()] + _one(trailing.group())
    after = parsed.after
    leading = _LEADING.search(after)
    if leading and leading.end() < len(after):  # the prompt's own end is left as written
        after = _one(leading.group()) + after[leading.end():]
    return PromptTemplate(before, after).source
