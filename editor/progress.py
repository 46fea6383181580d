"""Turn a method's (stage, fraction) reports into one overall fraction for a call with several requests.

One-request-at-a-time methods restart their stages for every request: a stage reported again at a
fraction no larger than before means the next request has started.
"""

from __future__ import annotations


class ProgressTracker:
    def __init__(self, units: int):
        self.units = max(1, units)
        self.index = 0
        self.done = 0.0
        self._seen: dict[str, float] = {}

    def update(self, stage: str, fraction: float) -> float:
        """Record a report; return the overall fraction done (never decreasing)."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        if stage in self._seen and fraction <= self._seen[stage] and self.index < self.units - 1:
            self.index += 1
            self._seen = {}
        self._seen[stage] = fraction
        self.done = max(self.done, (self.index + fraction) / self.units)
        return self.done
