"""`evaluate(editor, cases=None)`: everything the gate needs, measured on the edited model and on its
unedited base weights in the same run."""

from __future__ import annotations

import time

import torch
from pydantic import BaseModel, ConfigDict, Field

from suture.editor import Editor, EditRequest
from suture.editor.errors import InvalidInputError
from suture.editor.lengths import refuse_overlong
from suture.editor.noop import greedy_answers, matches_answer
from suture.editor.requests import TextList
from suture.evaluation.counterfact import CounterFactScores, score_cases
from suture.evaluation.drift import measure_drift
from suture.evaluation.fluency import measure_fluency
from suture.evaluation.generated import GenerationOptions, evaluate_generated
from suture.evaluation.report import BaseAnswer, CounterFactSummary, EvaluationReport, NormGrowth, TokenAccuracy
from suture.evaluation.scoring import score_pairs


class EvaluationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drift: bool = True
    reference_texts: TextList | None = Field(None, description="drift text; default: suture's reference set")
    fluency: bool = False
    fluency_prompts: int = Field(8, ge=1)
    token_accuracy: bool = True
    batch_size: int = Field(64, ge=1)
    generation: bool = Field(True, description="also judge greedy generations (evaluation/generated.py)")
    generation_options: GenerationOptions = Field(default_factory=GenerationOptions)


def _summary(scores: CounterFactScores) -> CounterFactSummary:
    return CounterFactSummary(efficacy=scores.efficacy, paraphrase=scores.paraphrase,
                              neighborhood=scores.neighborhood)


def _fill_target_true(editor: Editor, cases: list[EditRequest]) -> tuple[list[EditRequest], list[BaseAnswer]]:
    """Requests without `target_true` are compared against what the base model answers: its greedy
    continuation of the rewrite prompt under the base weights, cut to the first word (the way the gate
    reads it). A case whose target_new the base model already gives (`editor.noop.matches_answer`) has no
    old answer to compare against: it is left out of the scores. Returns the cases to score and, for every
    case read from the model, what was read."""
    missing = [i for i, c in enumerate(cases) if c.target_true is None]
    if not missing:
        return cases, []
    with editor.weights.base_weights():
        continuations = greedy_answers(editor.handle, [cases[i] for i in missing])
    read: dict[int, BaseAnswer] = {}
    for i, continuation in zip(missing, continuations):
        case = cases[i]
        word = (continuation.split() or ["<empty>"])[0].strip(".,;:") or "<empty>"
        noop = matches_answer(continuation, case.target_new) or word == case.target_new.strip()
        read[i] = BaseAnswer(case=i, id=case.id, continuation=continuation, target_true=None if noop else word,
                             noop=noop)
    out = []
    for i, case in enumerate(cases):
        if i in read:
            if read[i].noop:
                continue
            case = case.model_copy(update={"target_true": read[i].target_true})
        out.append(case)
    return out, list(read.values())


def _token_accuracy(editor: Editor, cases: list[EditRequest], batch_size: int) -> TokenAccuracy:
    rewrite = score_pairs(editor.handle, [(c.text, c.target_new) for c in cases], batch_size).token_accuracy()
    para_pairs = [(p, c.target_new) for c in cases for p in c.paraphrases]
    para = score_pairs(editor.handle, para_pairs, batch_size).token_accuracy() if para_pairs else None
    neighbor_pairs = [(p, a) for c in cases for p, a in zip(c.neighbors, c.neighbor_answers or
                                                              [c.target_true] * len(c.neighbors))]
    agreement = None
    if neighbor_pairs:
        edited = score_pairs(editor.handle, neighbor_pairs, batch_size)
        with editor.weights.base_weights():
            base = score_pairs(editor.handle, neighbor_pairs, batch_size)
        hits = [sum(a == b for a, b in zip(e, o)) / len(e) for e, o in zip(edited.predicted, base.predicted)]
        agreement = sum(hits) / len(hits)
    return TokenAccuracy(rewrite=float(rewrite.mean()), paraphrase=None if para is None else float(para.mean()),
                         neighborhood=agreement)


@torch.no_grad()
def norm_growth(editor: Editor) -> list[NormGrowth]:
    out = []
    for key in editor.weights.touched:
        module_path, _, name = key.rpartition(".")
        current = getattr(editor.model.get_submodule(module_path), name)
        base = editor.weights.base_value(key)
        out.append(NormGrowth(module=key, base_norm=float(base.float().norm()),
                              edited_norm=float(current.float().norm()),
                              change_norm=float((current.float() - base.float()).norm())))
    return out


def evaluate(editor: Editor, cases: list[EditRequest] | None = None,
             options: EvaluationOptions | None = None) -> EvaluationReport:
    """Measure the editor's current model on `cases` (default: the requests in its ledger)."""
    options = options or EvaluationOptions()
    started = time.perf_counter()
    if cases is None:
        cases = [r for entry in editor.ledger for r in entry.requests]
    if not cases:
        raise InvalidInputError("cases: nothing to evaluate (no cases given and the ledger holds no edit requests)")
    refuse_overlong(editor.handle, list(cases))  # "request i" is the case's position here
    cases, base_answers = _fill_target_true(editor, list(cases))
    if not cases:
        raise InvalidInputError("cases: every case lacks target_true and the base model already answers its "
                                "target_new (see base answers): nothing to compare")
    with editor.weights.base_weights():
        pre = score_cases(editor.handle, cases, options.batch_size)
    post = score_cases(editor.handle, cases, options.batch_size)
    report = EvaluationReport(
        n_cases=len(cases), pre=_summary(pre), post=_summary(post), cases_pre=pre.cases, cases_post=post.cases,
        token_accuracy=_token_accuracy(editor, cases, options.batch_size) if options.token_accuracy else None,
        drift=measure_drift(editor, options.reference_texts) if options.drift else None,
        fluency=measure_fluency(editor, [c.text for c in cases[: options.fluency_prompts]])
        if options.fluency else None,
        norm_growth=norm_growth(editor), base_answers=base_answers,
        generated=evaluate_generated(editor, cases, options.generation_options) if options.generation else None,
    )
    report.seconds = time.perf_counter() - started
    return report
