"""Evaluation of edits: metrics on edit cases (and, in time, the deployment gate)."""

from evaluation.counterfact import CaseScores, CounterFactScores, score_cases
from evaluation.datasets import load_counterfact
from evaluation.scoring import target_logprobs

__all__ = ["CaseScores", "CounterFactScores", "load_counterfact", "score_cases", "target_logprobs"]
