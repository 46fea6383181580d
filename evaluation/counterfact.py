"""CounterFact metrics (Meng et al. 2022), comparing whole-target log-probabilities:

- Efficacy: P(target_new) > P(target_true) on the rewrite prompt.
- Paraphrase: the same on each paraphrase prompt (averaged within a case, then over cases).
- Neighborhood: P(answer) > P(target_new) on each neighbor prompt (averaged likewise), the answer being the
  request's `neighbor_answers` entry when given, else target_true (CounterFact's neighbors share its object).
All prompts of all cases are scored in shared batches.
"""

from __future__ import annotations

from pydantic import BaseModel

from suture.editor.errors import InvalidInputError
from suture.editor.handle import ModelHandle
from suture.editor.requests import EditRequest
from suture.evaluation.scoring import target_logprobs


class CaseScores(BaseModel):
    id: str | None
    efficacy: float
    paraphrase: float | None
    neighborhood: float | None
    logp_new: float  # on the rewrite prompt
    logp_true: float


class CounterFactScores(BaseModel):
    efficacy: float
    paraphrase: float | None
    neighborhood: float | None
    cases: list[CaseScores]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_cases(handle: ModelHandle, cases: list[EditRequest], batch_size: int = 64) -> CounterFactScores:
    """Score every case; each needs `target_true` for the comparison."""
    pairs: list[tuple[str, str]] = []
    index = []  # (case, kind, start) where kind in rewrite/paraphrase/neighbor
    for case in cases:
        if case.target_true is None:
            raise InvalidInputError(f"case {case.label!r}: field 'target_true' is required for CounterFact metrics")
        neighbor_answers = case.neighbor_answers or [case.target_true] * len(case.neighbors)
        prompts = {"rewrite": [(case.text, case.target_true)],
                   "paraphrase": [(text, case.target_true) for text in case.paraphrases],
                   "neighbor": list(zip(case.neighbors, neighbor_answers))}
        spans = {}
        for kind, texts in prompts.items():
            spans[kind] = (len(pairs), len(texts))
            for text, answer in texts:
                pairs += [(text, case.target_new), (text, answer)]
        index.append(spans)
    lp = target_logprobs(handle, pairs, batch_size=batch_size).tolist()

    def wins(kind_span: tuple[int, int], new_wins: bool) -> list[float]:
        start, count = kind_span
        out = []
        for k in range(count):
            new, true = lp[start + 2 * k], lp[start + 2 * k + 1]
            out.append(float(new > true) if new_wins else float(true > new))
        return out

    results = []
    for case, spans in zip(cases, index):
        rw = spans["rewrite"][0]
        results.append(CaseScores(
            id=case.id, efficacy=float(lp[rw] > lp[rw + 1]),
            paraphrase=_mean(wins(spans["paraphrase"], True)),
            neighborhood=_mean(wins(spans["neighbor"], False)),
            logp_new=lp[rw], logp_true=lp[rw + 1]))
    return CounterFactScores(
        efficacy=_mean([c.efficacy for c in results]) or 0.0,
        paraphrase=_mean([c.paraphrase for c in results if c.paraphrase is not None]),
        neighborhood=_mean([c.neighborhood for c in results if c.neighborhood is not None]),
        cases=results)
