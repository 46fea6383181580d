"""The subject restated: rows that ask an edit not to garble the subject when the model repeats it.

A chat model's reply usually restates the question ("Complete the sentence: Maria Altmann originated
from" -> "Maria Altmann originated from ..."). ROME writes δ (‖δ‖ about three times the MLP output) at
the subject's last token, and the copying heads that restate the subject read it there: on SmolLM2 the
edited model replied "Marla Alt Text: ..." and "Neko-Ex-Fu-Fu..." where the base model restated the
subject correctly (issue 13's chat-form misses). The echo row is the rewrite prompt, a line break and the
subject again; the value objective keeps the next-token distribution at each token of the copy close to
the unedited model's (KL), the way ROME's "{} is a" row keeps the subject's essence.
"""

from __future__ import annotations

from suture.editor.prompt_template import PromptTemplate


def echo_row(tokenizer, prompt: PromptTemplate, subject: str) -> tuple[PromptTemplate, list[int]]:
    """(template, copy ids): the prompt followed by a line break, and the subject's ids as they continue it
    (the subject tokenized together with the text before it, so the join is the tokenizer's own)."""
    template = prompt.within("{}\n")
    head = tokenizer(template.fill(subject).text)["input_ids"]
    full = tokenizer(template.fill(subject).text + subject)["input_ids"]
    if full[: len(head)] == head and len(full) > len(head):
        return template, full[len(head):]
    return template, tokenizer(subject, add_special_tokens=False)["input_ids"]  # the join merged tokens
