"""What a strategy's search works with: the failure family, the ranked heads, the locality probe and the
thresholds of the search."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from suture.editor import Editor
from suture.methods.localize.head_attribution import HeadAttribution
from suture.repair.trials import LocalityProbe, fixed_fraction


@dataclass
class SearchContext:
    editor: Editor
    failing: list[str]  # prompts the model gets wrong
    twins: list[str]  # the same questions in a form it gets right, in the same order
    answers: list[str]  # the expected answer of each failing prompt, as text
    right: torch.Tensor  # (len(failing),) expected first answer token of each failing prompt
    attribution: HeadAttribution  # heads ranked by patching effect from the twins into the failing prompts
    locality: LocalityProbe  # unrelated prompts whose next token must not change (judges the search)
    max_heads: int
    target_fixed: float
    min_unchanged: float
    extra_sizes: int
    batch_size: int
    progress: Callable[[str], None]

    def fixed(self) -> float:
        """Fraction of the failing prompts the model (as currently edited) answers right."""
        return fixed_fraction(self.editor, self.failing, self.right, self.batch_size)

    def ranked(self, by: str, positive_only: bool = False, limit: int | None = None) -> list[tuple[int, int]]:
        """(layer, head) in order of patching effect ('abs' or 'signed'); at most `limit` (default max_heads)."""
        heads = [(layer, head) for layer, head, effect in self.attribution.ranking(by)
                 if not positive_only or effect > 0]
        return heads[: self.max_heads if limit is None else limit]
