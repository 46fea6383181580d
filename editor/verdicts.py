"""A verdict for every request after an edit: does the edited model now say the new target?

Checked as the gate checks it, on the rewrite prompt, in one teacher-forced pass and one short greedy
generation:

- every target token (spelled as the prompt continues, editor/kv/spelling.py) is the model's greedy
  choice after the prompt and the target tokens before it, so the whole target is the greedy answer; each
  token is tested on its own, not the mean NLL, so an unlikely first token cannot hide behind easy ones;
- the greedy continuation, cut at its natural end (editor/generation.py), names the new target before any
  mention of the old one (editor/judge.py), so a target that the model extends into another word fails,
  and does not keep repeating it (a degenerate "midfielder midfielder midfielder", judge.stutters).

`Editor.apply` rolls an edit back when a request fails and raises `EditRequestsFailedError` naming each
failed request with what was measured, unless asked to keep partial results.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel

from suture.editor.errors import SutureError
from suture.editor.generation import generate_greedy
from suture.editor.judge import judge, stutters
from suture.editor.kv.tokens import request_target_ids
from suture.editor.noop import find_noops
from suture.editor.requests import EditRequest

# What `Editor.apply(keep_failed=None)` does: roll back (False). The unit tests of weight mechanics on
# tiny random-weight models, which cannot learn an edit, set it to True (tests/conftest.py).
KEEP_FAILED_DEFAULT = False


class RequestVerdict(BaseModel):
    """One request's verdict and the numbers it rests on."""

    request: str  # the request's label (its id, or "prompt -> target")
    passed: bool
    reason: str  # empty when passed; otherwise what failed, with the measured value
    target_tokens: list[str]  # the target as trained and checked, token by token
    token_probs: list[float]  # P(token | prompt, earlier target tokens) on the edited model
    token_greedy: list[bool]  # whether each token is the argmax there
    min_token_prob: float
    generated: str  # greedy continuation of the rewrite prompt, cut at its natural end
    judged: str  # "new", "old" or "neither" (editor/judge.py)


class EditRequestsFailedError(SutureError):
    """Requests whose edited model does not say their new target; the edit was rolled back."""

    def __init__(self, verdicts: list[RequestVerdict], rolled_back: bool = True):
        self.verdicts = verdicts
        self.rolled_back = rolled_back
        names = "; ".join(f"{v.request!r}: {v.reason}" for v in verdicts)
        tail = (" The edit was rolled back (keep partial results with keep_failed: `apply(..., keep_failed=True)`, "
                "`suture edit --keep-failed`, or a job's \"keep_failed\": true)." if rolled_back else "")
        super().__init__(f"{len(verdicts)} request(s) failed their post-edit check: {names}.{tail}")


@torch.no_grad()
def check_requests(handle, requests: list[EditRequest], max_new_tokens: int | None = None,
                   batch_size: int = 32) -> list[RequestVerdict]:
    """The verdict of each request on the handle's current weights (see the module docstring)."""
    tok = handle.tokenizer
    targets = [request_target_ids(tok, r) for r in requests]
    probs, greedy = target_token_checks(handle, requests, batch_size, targets=targets)
    budget = max_new_tokens or max(len(t) for t in targets) + 6
    generations = generate_greedy(handle, [r.text for r in requests], max_new_tokens=budget, stop="sentence")
    verdicts = []
    for r, t, pr, gr, gen in zip(requests, targets, probs, greedy, generations):
        judged = judge(gen.text, r.target_new, r.target_true)
        reasons = []
        if not all(gr):
            first = gr.index(False)
            reasons.append(f"target token {first + 1}/{len(t)} {tok.decode([t[first]])!r} is not the greedy "
                           f"choice (p={pr[first]:.3f})")
        if judged != "new":
            reasons.append(f"greedy answer {gen.text!r} does not name {r.target_new!r}"
                           + (" (names the old target first)" if judged == "old" else ""))
        elif stutters(gen.text, r.target_new):
            reasons.append(f"greedy answer {gen.text!r} repeats {r.target_new.strip()!r} without stopping "
                           "(a degenerate edit: the value is too strong for this prompt)")
        verdicts.append(RequestVerdict(
            request=r.label, passed=not reasons, reason="; ".join(reasons),
            target_tokens=[tok.decode([x]) for x in t], token_probs=pr, token_greedy=gr,
            min_token_prob=min(pr), generated=gen.text, judged=judged))
    return verdicts


@torch.no_grad()
def target_token_checks(handle, requests: list[EditRequest], batch_size: int = 32,
                        targets: list[list[int]] | None = None) -> tuple[list[list[float]], list[list[bool]]]:
    """Per request, teacher-forced on its rewrite prompt: P(token | prompt, earlier target tokens) of each
    target token as trained, and whether it is the greedy choice there. No generation: the cheap half of a
    verdict, also used to stop MEMIT's rounds once every target is written. `targets`: the requests'
    target ids (`request_target_ids`) when the caller already has them."""
    tok, device = handle.tokenizer, handle.device
    prompts = [tok(r.text)["input_ids"] for r in requests]
    targets = targets if targets is not None else [request_target_ids(tok, r) for r in requests]
    probs: list[list[float]] = []
    greedy: list[list[bool]] = []
    for begin in range(0, len(requests), batch_size):
        rows = [p + t for p, t in zip(prompts[begin: begin + batch_size], targets[begin: begin + batch_size])]
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        logits = handle.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for i, (p, t) in enumerate(zip(prompts[begin: begin + batch_size], targets[begin: begin + batch_size])):
            cols = torch.arange(len(p) - 1, len(p) - 1 + len(t), device=device)
            wanted = torch.tensor(t, device=device)
            probs.append(logp[i, cols, wanted].exp().tolist())
            greedy.append((logp[i, cols].argmax(-1) == wanted).tolist())
    return probs, greedy


def settle_verdicts(editor, requests: list[EditRequest], verify: bool, keep_failed: bool | None,
                    hints: dict[int, str] | None = None, noops: list[EditRequest] | None = None,
                    ) -> tuple[list[RequestVerdict], list[RequestVerdict]]:
    """What `Editor.apply` does once the deltas are in the weights: no requests or `verify=False`, no
    verdicts; a failed request rolls the edit back (the ledger without it) and raises, unless
    `keep_failed` (None: `KEEP_FAILED_DEFAULT`). `hints` (by request index, from the method) explain
    a failure and are added to that request's reason. `noops`, the requests left out because the model
    already gave their target, are checked again the same way (the model must still give it): the edit of
    the others can break them. Returns (verdicts of `requests`, failed verdicts of broken no-ops)."""
    if not requests or not verify:
        return [], []
    if keep_failed is None:
        keep_failed = KEEP_FAILED_DEFAULT
    verdicts = check_requests(editor.handle, requests)
    for i, verdict in enumerate(verdicts):
        if not verdict.passed and (hints or {}).get(i):
            verdict.reason = f"{verdict.reason}; {hints[i]}"
    broken = _broken_noops(editor.handle, noops or [])
    failed = [v for v in verdicts if not v.passed] + broken
    if failed and not keep_failed:
        editor._rebuild()  # the weights as the ledger says, without this edit
        raise EditRequestsFailedError(failed)
    return verdicts, broken


def _broken_noops(handle, noops: list[EditRequest]) -> list[RequestVerdict]:
    """Failed verdicts of the no-ops whose target the edited model no longer gives (the rule they were
    left out by, `editor/noop.py`), with the full measurement."""
    if not noops:
        return []
    still = {n["request"] for n in find_noops(handle, noops)}
    lost = [r for i, r in enumerate(noops) if i not in still]
    verdicts = check_requests(handle, lost) if lost else []
    for verdict in verdicts:
        verdict.passed = False
        verdict.reason = ("the model gave this target before the edit (left out as a no-op) and no longer does: "
                          + (verdict.reason or "its greedy answer changed"))
    return verdicts
