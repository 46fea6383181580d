"""Health of a long editing session: every k edits, measure drift from the base model, growth of the
edited weights, and whether a sample of earlier edits still holds and their neighbors are intact.
Crossing a threshold raises a typed warning or stops the session, as configured."""

from __future__ import annotations

import random
import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from suture.editor import Editor, EditResult, SutureError
from suture.editor.requests import TextList
from suture.evaluation.counterfact import score_cases
from suture.evaluation.drift import measure_drift
from suture.evaluation.evaluate import _fill_target_true, norm_growth


class HealthThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_drift_kl: float | None = Field(0.1, ge=0)
    min_top1_agreement: float | None = Field(0.8, ge=0, le=1)
    max_norm_growth: float | None = Field(0.5, ge=0, description="relative Frobenius growth of any edited weight")
    min_efficacy: float | None = Field(0.8, ge=0, le=1, description="on the sampled earlier edits")
    max_neighborhood_drop: float | None = Field(0.1, ge=0, le=1, description="on the sampled earlier edits")


class HealthPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    every: int = Field(10, ge=1, description="check after every k-th edit")
    sample: int = Field(20, ge=1, description="earlier edit requests re-scored per check")
    action: Literal["warn", "stop"] = "warn"
    thresholds: HealthThresholds = Field(default_factory=HealthThresholds)
    reference_texts: TextList | None = None
    seed: int = 0


class HealthCheck(BaseModel):
    edits: int
    drift_kl: float
    top1_agreement: float
    max_norm_growth: float
    efficacy: float
    neighborhood_pre: float | None
    neighborhood_post: float | None
    failures: list[str] = []


class HealthWarning(UserWarning):
    """A health threshold was crossed; the session goes on."""


class HealthStopError(SutureError):
    """A health threshold was crossed and the policy says stop; the offending edit stays applied so it
    can be inspected, and `Editor.revert()` undoes it."""

    def __init__(self, check: HealthCheck):
        self.check = check
        super().__init__(f"editing stopped after {check.edits} edits: " + "; ".join(check.failures))


class HealthMonitor:
    def __init__(self, policy: HealthPolicy | None = None):
        self.policy = policy or HealthPolicy()
        self.history: list[HealthCheck] = []

    def check(self, editor: Editor) -> HealthCheck:
        policy, limits = self.policy, self.policy.thresholds
        requests = [r for entry in editor.ledger for r in entry.requests]
        sample = random.Random(policy.seed + len(editor.ledger)).sample(requests, min(policy.sample, len(requests)))
        sample, _ = _fill_target_true(editor, sample)
        with editor.weights.base_weights():
            pre = score_cases(editor.handle, sample)
        post = score_cases(editor.handle, sample)
        drift = measure_drift(editor, policy.reference_texts)
        growth = max((g.growth for g in norm_growth(editor)), default=0.0)
        check = HealthCheck(edits=len(editor.ledger), drift_kl=drift.mean_kl, top1_agreement=drift.top1_agreement,
                            max_norm_growth=growth, efficacy=post.efficacy, neighborhood_pre=pre.neighborhood,
                            neighborhood_post=post.neighborhood)
        drop = None if pre.neighborhood is None else pre.neighborhood - (post.neighborhood or 0.0)
        rules: list[tuple[str, Any, Any, bool]] = [
            ("max_drift_kl", check.drift_kl, limits.max_drift_kl, False),
            ("min_top1_agreement", check.top1_agreement, limits.min_top1_agreement, True),
            ("max_norm_growth", check.max_norm_growth, limits.max_norm_growth, False),
            ("min_efficacy", check.efficacy, limits.min_efficacy, True),
            ("max_neighborhood_drop", drop, limits.max_neighborhood_drop, False),
        ]
        for name, value, limit, at_least in rules:
            if value is None or limit is None:
                continue
            if (value < limit) if at_least else (value > limit):
                check.failures.append(f"{name}: {value:.4f} {'<' if at_least else '>'} {limit:.4f}")
        self.history.append(check)
        return check

    def after_edit(self, editor: Editor) -> HealthCheck | None:
        """Run a check when the ledger length is a multiple of `every`; warn or stop on failures."""
        if not editor.ledger or len(editor.ledger) % self.policy.every:
            return None
        check = self.check(editor)
        if check.failures:
            if self.policy.action == "stop":
                raise HealthStopError(check)
            warnings.warn(f"after {check.edits} edits: " + "; ".join(check.failures), HealthWarning, stacklevel=2)
        return check


class EditingSession:
    """Sequential editing with a health monitor: `apply` edits, then lets the monitor look."""

    def __init__(self, editor: Editor, policy: HealthPolicy | None = None):
        self.editor = editor
        self.monitor = HealthMonitor(policy)

    def apply(self, requests, method: str = "rome", **hparams) -> EditResult:
        result = self.editor.apply(requests, method=method, **hparams)
        self.monitor.after_edit(self.editor)
        return result
