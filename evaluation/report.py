"""The evaluation report: what was measured on which cases, before (base weights) and after."""

from __future__ import annotations

from pydantic import BaseModel

from suture.evaluation.counterfact import CaseScores
from suture.evaluation.generated import GeneratedScores


class CounterFactSummary(BaseModel):
    efficacy: float
    paraphrase: float | None
    neighborhood: float | None


class DriftReport(BaseModel):
    """Edited model against the unedited base model on reference text."""

    mean_kl: float  # KL(base || edited) of next-token distributions, mean over positions
    top1_agreement: float
    perplexity_base: float
    perplexity_edited: float
    kl_per_position: list[float]  # for the report's histogram

    @property
    def perplexity_change(self) -> float:
        return self.perplexity_edited / self.perplexity_base - 1


class FluencyReport(BaseModel):
    """Weighted bi/tri-gram entropy of greedy generations (higher = less repetitive)."""

    base: float
    edited: float
    samples: list[str] = []


class NormGrowth(BaseModel):
    """Frobenius norms of one edited weight: before, after, and of the change itself."""

    module: str
    base_norm: float
    edited_norm: float
    change_norm: float | None = None  # ‖W - W₀‖: a rotation changes W without growing it

    @property
    def relative_change(self) -> float | None:
        if self.change_norm is None or self.base_norm == 0:  # a created parameter has no base size
            return None
        return self.change_norm / self.base_norm

    @property
    def growth(self) -> float:
        return self.edited_norm / self.base_norm - 1


class TokenAccuracy(BaseModel):
    """zsRE-style teacher-forced token accuracy."""

    rewrite: float
    paraphrase: float | None
    neighborhood: float | None  # agreement of edited and base predictions on neighbor answers


class BaseAnswer(BaseModel):
    """A case given without target_true: what the base model answers instead (greedy, base weights)."""

    case: int  # position among the cases given
    id: str | None
    continuation: str  # the base model's greedy continuation of the rewrite prompt
    target_true: str | None  # its first word, the answer target_new is compared against; None for a no-op
    noop: bool  # the base model already gives target_new: nothing to compare, the case is not scored


class EvaluationReport(BaseModel):
    n_cases: int
    pre: CounterFactSummary
    post: CounterFactSummary
    cases_pre: list[CaseScores]
    cases_post: list[CaseScores]
    token_accuracy: TokenAccuracy | None = None
    drift: DriftReport | None = None
    fluency: FluencyReport | None = None
    norm_growth: list[NormGrowth] = []
    base_answers: list[BaseAnswer] = []  # cases without target_true: the base model's own answer was read
    # What the edited model generates, judged (evaluation/generated.py); apart from the teacher-forced
    # scores above, never mixed with them.
    generated: GeneratedScores | None = None
    seconds: float = 0.0

    @property
    def neighborhood_drop(self) -> float | None:
        """Pre-edit minus post-edit Neighborhood score; None when no case has neighbor prompts."""
        if self.pre.neighborhood is None or self.post.neighborhood is None:
            return None
        return self.pre.neighborhood - self.post.neighborhood

    @property
    def max_norm_growth(self) -> float:
        return max((n.growth for n in self.norm_growth), default=0.0)
