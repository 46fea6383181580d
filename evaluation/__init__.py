"""Evaluation of edits: metrics, dataset loaders, the deployment gate and reports."""

from evaluation.counterfact import CaseScores, CounterFactScores, score_cases
from evaluation.datasets import (
    KnownFact,
    load_cases,
    load_counterfact,
    load_known,
    load_requests_jsonl,
    load_zsre,
)
from evaluation.evaluate import EvaluationOptions, evaluate, norm_growth
from evaluation.gate import GatePolicy
from evaluation.health import (
    EditingSession,
    HealthCheck,
    HealthMonitor,
    HealthPolicy,
    HealthStopError,
    HealthThresholds,
    HealthWarning,
)
from evaluation.report import EvaluationReport
from evaluation.scoring import score_pairs, target_logprobs

__all__ = [
    "CaseScores", "CounterFactScores", "EditingSession", "EvaluationOptions", "HealthCheck", "HealthMonitor",
    "HealthPolicy", "HealthStopError", "HealthThresholds", "HealthWarning", "EvaluationReport", "GatePolicy",
    "KnownFact",
    "evaluate", "load_cases", "load_counterfact", "load_known", "load_requests_jsonl", "load_zsre", "norm_growth",
    "score_cases", "score_pairs", "target_logprobs",
]
