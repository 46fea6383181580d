"""Evaluation of edits: metrics, dataset loaders, the deployment gate and reports."""

from suture.evaluation.counterfact import CaseScores, CounterFactScores, score_cases
from suture.evaluation.datasets import (
    KnownFact,
    load_cases,
    load_counterfact,
    load_known,
    load_requests_jsonl,
    load_zsre,
)
from suture.evaluation.evaluate import EvaluationOptions, evaluate, norm_growth
from suture.evaluation.gate import GatePolicy
from suture.evaluation.health import (
    EditingSession,
    HealthCheck,
    HealthMonitor,
    HealthPolicy,
    HealthStopError,
    HealthThresholds,
    HealthWarning,
)
from suture.evaluation.report import EvaluationReport
from suture.evaluation.scoring import score_pairs, target_logprobs

__all__ = [
    "CaseScores", "CounterFactScores", "EditingSession", "EvaluationOptions", "HealthCheck", "HealthMonitor",
    "HealthPolicy", "HealthStopError", "HealthThresholds", "HealthWarning", "EvaluationReport", "GatePolicy",
    "KnownFact",
    "evaluate", "load_cases", "load_counterfact", "load_known", "load_requests_jsonl", "load_zsre", "norm_growth",
    "score_cases", "score_pairs", "target_logprobs",
]
