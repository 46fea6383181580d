"""Fluency as n-gram entropy of greedy generations (ROME's measure: 2/3 bigram + 4/3 trigram entropy,
averaged), which collapses when an edit makes the model repeat itself."""

from __future__ import annotations

import math
from collections import Counter

from suture.editor import Editor
from suture.evaluation.report import FluencyReport


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    words = text.split()
    total = 0.0
    for n, weight in zip(ns, weights):
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        count = sum(grams.values())
        entropy = -sum(c / count * math.log2(c / count) for c in grams.values()) if count else 0.0
        total += weight * entropy
    return total / len(ns)


def measure_fluency(editor: Editor, prompts: list[str], max_new_tokens: int = 40) -> FluencyReport:
    edited = editor.generate(prompts, max_new_tokens=max_new_tokens)
    with editor.weights.base_weights():
        base = editor.generate(prompts, max_new_tokens=max_new_tokens)

    def mean_entropy(texts: list[str]) -> float:
        return sum(ngram_entropy(p + t) for p, t in zip(prompts, texts)) / len(texts)

    return FluencyReport(base=mean_entropy(base), edited=mean_entropy(edited), samples=edited[:5])
