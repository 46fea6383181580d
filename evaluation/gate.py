"""`GatePolicy`: thresholds a report must meet before a checkpoint is written.

It implements `editor.Gate`, so `Editor.save(path, gate=policy)` refuses to write without `editor/`
knowing anything about evaluation.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from suture.editor import Editor, GateDecision
from suture.evaluation.evaluate import EvaluationOptions, evaluate
from suture.evaluation.report import EvaluationReport


class GatePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_efficacy: float = Field(0.9, ge=0, le=1)
    min_paraphrase: float = Field(0.7, ge=0, le=1)
    max_neighborhood_drop: float = Field(0.05, ge=0, le=1)
    max_drift_kl: float = Field(0.05, ge=0)
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    max_norm_growth: float | None = Field(None, ge=0, description="relative Frobenius growth of any edited weight")
    # Thresholds on generated answers (evaluation/generated.py), apart from the teacher-forced ones above.
    min_generated_efficacy: float | None = Field(
        0.9, ge=0, le=1, description="share of rewrite prompts whose greedy answer names target_new")
    min_generated_paraphrase: float | None = Field(None, ge=0, le=1, description="the same on paraphrases")
    min_generated_chat: float | None = Field(
        None, ge=0, le=1, description="the fact asked through the chat template (models that have one)")
    min_generated_locality: float | None = Field(
        None, ge=0, le=1, description="share of neighbor prompts whose generated answer is the base model's")
    max_fluency_drop: float | None = Field(
        None, ge=0, le=1, description="relative drop of the generations' n-gram entropy (and of the chat "
        "replies') below the base model's, e.g. 0.05")
    min_generated_subject_kept: float | None = Field(
        None, ge=0, le=1, description="of the longer answers where the base model restates the subject, the "
        "share where the edited model restates it too (an edit can garble the name it was keyed on)")
    options: EvaluationOptions = Field(default_factory=EvaluationOptions)

    def check(self, report: EvaluationReport) -> list[str]:
        """One line per failed threshold, naming it, the measured value and by how much it missed. A
        threshold the caller set explicitly that had nothing to judge (no request has paraphrases, say)
        fails as "not measured"; a default one is listed by `not_measured` instead."""
        return self._judge(report)[0]

    def not_measured(self, report: EvaluationReport) -> list[str]:
        """Default thresholds that had nothing to judge in `report` and so decided nothing."""
        return self._judge(report)[1]

    def _judge(self, report: EvaluationReport) -> tuple[list[str], list[str]]:
        failures: list[str] = []
        unjudged: list[str] = []

        def unmeasured(name: str, value: float | None, limit: float | None, vacuous: bool = False) -> bool:
            if limit is None or value is not None:
                return False
            if vacuous:  # a limit no value can miss (a minimum of 0) accepts no value as well
                return True
            base = name.split(" ")[0]
            (failures if base in self.model_fields_set else unjudged).append(
                f"{name}: not measured (no request had prompts of this kind)")
            return True

        def at_least(name: str, value: float | None, limit: float | None) -> None:
            if not unmeasured(name, value, limit, limit is not None and limit <= 0) and limit is not None \
                    and value < limit:
                failures.append(f"{name}: {value:.4f} < {limit:.4f} (short by {limit - value:.4f})")

        def at_most(name: str, value: float | None, limit: float | None, ceiling: float | None = None) -> None:
            vacuous = limit is not None and ceiling is not None and limit >= ceiling
            if not unmeasured(name, value, limit, vacuous) and limit is not None and value > limit:
                failures.append(f"{name}: {value:.4f} > {limit:.4f} (over by {value - limit:.4f})")

        at_least("min_efficacy", report.post.efficacy, self.min_efficacy)
        at_least("min_paraphrase", report.post.paraphrase, self.min_paraphrase)
        at_most("max_neighborhood_drop", report.neighborhood_drop, self.max_neighborhood_drop, ceiling=1.0)
        if report.drift is not None:
            at_most("max_drift_kl", report.drift.mean_kl, self.max_drift_kl)
            at_least("min_top1_agreement", report.drift.top1_agreement, self.min_top1_agreement)
        else:  # a drift threshold with drift switched off must not pass silently
            failures.append("max_drift_kl: drift was not measured (options.drift is false)")
        at_most("max_norm_growth", report.max_norm_growth, self.max_norm_growth)
        self._check_generated(report, at_least, at_most, failures)
        return failures, unjudged

    def _check_generated(self, report: EvaluationReport, at_least, at_most, failures: list[str]) -> None:
        limits = {"min_generated_efficacy": self.min_generated_efficacy,
                  "min_generated_paraphrase": self.min_generated_paraphrase,
                  "min_generated_chat": self.min_generated_chat,
                  "min_generated_locality": self.min_generated_locality,
                  "max_fluency_drop": self.max_fluency_drop,
                  "min_generated_subject_kept": self.min_generated_subject_kept}
        gen = report.generated
        if gen is None:  # a generated threshold with generation switched off must not pass silently
            failures += [f"{name}: generated answers were not measured (options.generation is false)"
                         for name, limit in limits.items() if limit is not None]
            return
        at_least("min_generated_efficacy", gen.efficacy, self.min_generated_efficacy)
        at_least("min_generated_paraphrase", gen.paraphrase, self.min_generated_paraphrase)
        if self.min_generated_chat is not None and gen.chat is None:
            failures.append("min_generated_chat: not measured (the model has no chat template)")
        else:
            at_least("min_generated_chat", gen.chat, self.min_generated_chat)
        at_least("min_generated_locality", gen.locality, self.min_generated_locality)
        if self.min_generated_subject_kept is not None and gen.subject_kept is None:
            failures.append("min_generated_subject_kept: not measured (no base answer restated a subject)")
        else:
            at_least("min_generated_subject_kept", gen.subject_kept, self.min_generated_subject_kept)
        if gen.fluency is not None:
            at_most("max_fluency_drop", 1 - gen.fluency.ratio, self.max_fluency_drop)
            if gen.fluency.chat_ratio is not None:
                at_most("max_fluency_drop (chat)", 1 - gen.fluency.chat_ratio, self.max_fluency_drop)

    def decide_on(self, report: EvaluationReport) -> GateDecision:
        failures, unjudged = self._judge(report)
        return GateDecision(passed=not failures, failures=failures, not_measured=unjudged,
                            report=report.model_dump(mode="json"), policy=self.model_dump(mode="json"))

    def decide(self, editor: Editor) -> GateDecision:
        return self.decide_on(evaluate(editor, options=self.options))
