"""The subject restated: rows that ask an edit not to garble the subject when the model repeats it.

A chat model's reply usually restates the question ("Complete the sentence: Maria Altmann originated
from" -> "Maria Altmann originated from ..."). ROME writes δ (‖δ‖ about three times the MLP output) at
the subject's last token, and what restates the subject reads it there: on SmolLM2 the edited model
replied "Marla Alt Text: ..." and "Apolinario MÃ©eÃ¨s is an A-1." where the base model restated the
subject correctly (issue 13's chat-form misses). The echo row is the rewrite prompt as a user's chat turn
(a plain line break for models without a chat template), then the subject again where the reply starts;
the value objective keeps the next-token distribution at each token of that copy close to the unedited
model's (KL), the way ROME's "{} is a" row keeps the subject's essence.
"""

from __future__ import annotations

from suture.editor.prompt_template import PromptTemplate

_MARK = "\u2063subject\u2063"  # invisible separators: text no prompt or chat template contains


def echo_template(tokenizer, prompt: PromptTemplate) -> PromptTemplate:
    """`prompt` as a user turn followed by the assistant's header, or followed by a line break."""
    if not getattr(tokenizer, "chat_template", None):
        return prompt.within("{}\n")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": prompt.before + _MARK + prompt.after}],
                                             tokenize=False, add_generation_prompt=True)
    before, _, after = rendered.partition(_MARK)
    return PromptTemplate(before, after)


def echo_row(tokenizer, prompt: PromptTemplate, subject: str) -> tuple[PromptTemplate, list[int]]:
    """(template, copy ids): `echo_template`, and the subject's ids as they continue it (tokenized together
    with the text before it, so the join is the tokenizer's own)."""
    template = echo_template(tokenizer, prompt)
    text = template.fill(subject).text
    chat = bool(getattr(tokenizer, "chat_template", None))
    head = tokenizer(text, add_special_tokens=not chat)["input_ids"]
    full = tokenizer(text + subject, add_special_tokens=not chat)["input_ids"]
    if full[: len(head)] == head and len(full) > len(head):
        return template, full[len(head):]
    return template, tokenizer(subject, add_special_tokens=False)["input_ids"]  # the join merged tokens
