"""Where the value objective reads the model: which batch rows belong to which request, which rows carry
the rewrite (template + prompt + target) or the KL prompt, and at which (row, position) each target token
is predicted."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from suture.editor.kv.echo import echo_row
from suture.editor.kv.templates import templates_for
from suture.editor.kv.tokens import PromptBatch, build_batch, request_target_ids
from suture.editor.kv.word_boundary import ends_in_word
from suture.editor.prompt_template import PromptTemplate, parse_template
from suture.editor.requests import EditRequest


@dataclass
class ValueLayout:
    request_of_row: torch.Tensor  # [rows]
    rewrite_rows: torch.Tensor  # rows holding template+prompt+target, the request's templates in order
    bare_rows: torch.Tensor  # per request, its row in the bare "{}" template (the first of its block)
    kl_rows: torch.Tensor  # one "{} is a" row per request
    target_rows: torch.Tensor  # one entry per target token to predict
    target_cols: torch.Tensor
    target_ids: torch.Tensor
    target_request: torch.Tensor
    target_counts: torch.Tensor  # tokens per request target, for averaging
    boundary_rows: torch.Tensor  # (row, position) after the last target token of a target that ends in a
    boundary_cols: torch.Tensor  # word (word_boundary.py): the next token should not continue that word
    boundary_request: torch.Tensor
    echo_rows: torch.Tensor  # (row, position) predicting each token of the subject copied after the prompt
    echo_cols: torch.Tensor  # (echo.py): an edit should not garble the subject when the model restates it
    echo_request: torch.Tensor

    def to(self, device: torch.device) -> ValueLayout:
        return ValueLayout(*(getattr(self, f.name).to(device) for f in fields(self)))


def value_layout(tokenizer, requests: list[EditRequest], templates: list[str], kl_prompt: str,
                 word_boundary: bool = False, echo: bool = False) -> tuple[PromptBatch, ValueLayout]:
    """The batch of every request's template rows and KL row, and where each loss term reads it. With
    `word_boundary`, rows of a target that ends in a word carry the whole target, so that the position
    after it can be read. With `echo`, one more row per request: its prompt as a chat turn (or followed by a
    line break) and the subject again (echo.py)."""
    texts: list[PromptTemplate | str] = []
    subjects, suffixes, owner, kind = [], [], [], []  # kind: "rewrite", "kl" or "echo"
    targets = [request_target_ids(tokenizer, r) for r in requests]
    bounded = [word_boundary and ends_in_word(r.target_new) for r in requests]
    bare = []
    for i, request in enumerate(requests):
        prompt = parse_template(request.prompt)
        bare.append(len(texts))
        for template in templates_for(tokenizer, request, templates):
            texts.append(prompt.within(template))
            subjects.append(request.subject)
            suffixes.append(targets[i] if bounded[i] else targets[i][:-1])
            owner.append(i)
            kind.append("rewrite")
    for i, request in enumerate(requests):
        texts.append(kl_prompt)
        subjects.append(request.subject)
        suffixes.append([])
        owner.append(i)
        kind.append("kl")
    echo_first = len(texts)
    if echo:
        for i, request in enumerate(requests):
            template, copy = echo_row(tokenizer, parse_template(request.prompt), request.subject)
            texts.append(template)
            subjects.append(request.subject)
            suffixes.append(copy)
            owner.append(i)
            kind.append("echo")
    batch = build_batch(tokenizer, texts, subjects, suffixes)
    e_rows, e_cols, e_req = [], [], []
    for row in range(echo_first, len(texts)):
        start = int(batch.lengths[row]) - len(suffixes[row])
        for j in range(len(suffixes[row])):
            e_rows.append(row)
            e_cols.append(start - 1 + j)  # the position whose next-token distribution predicts copy token j
            e_req.append(owner[row])
    rows, cols, ids, req = [], [], [], []
    b_rows, b_cols, b_req = [], [], []
    for row, (i, row_kind) in enumerate(zip(owner, kind)):
        if row_kind != "rewrite":
            continue
        if bounded[i]:
            b_rows.append(row)
            b_cols.append(int(batch.lengths[row]) - 1)  # the last target token predicts what follows it
            b_req.append(i)
        prompt_len = int(batch.lengths[row]) - len(suffixes[row])
        for j, token in enumerate(targets[i]):
            rows.append(row)
            cols.append(prompt_len - 1 + j)
            ids.append(token)
            req.append(i)
    owner_t = torch.tensor(owner)
    of_kind = lambda name: torch.tensor([k == name for k in kind])  # noqa: E731
    return batch, ValueLayout(
        request_of_row=owner_t,
        rewrite_rows=torch.nonzero(of_kind("rewrite")).flatten(), bare_rows=torch.tensor(bare),
        kl_rows=torch.nonzero(of_kind("kl")).flatten(),
        target_rows=torch.tensor(rows), target_cols=torch.tensor(cols), target_ids=torch.tensor(ids),
        target_request=torch.tensor(req),
        target_counts=torch.bincount(torch.tensor(req), minlength=len(requests)),
        boundary_rows=torch.tensor(b_rows, dtype=torch.long), boundary_cols=torch.tensor(b_cols, dtype=torch.long),
        boundary_request=torch.tensor(b_req, dtype=torch.long),
        echo_rows=torch.tensor(e_rows, dtype=torch.long), echo_cols=torch.tensor(e_cols, dtype=torch.long),
        echo_request=torch.tensor(e_req, dtype=torch.long),
    )
