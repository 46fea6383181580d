"""Turn a method's (stage, fraction) reports into one overall fraction for a call with several requests;
and the cooperative cancellation check that long loops call.

One-request-at-a-time methods restart their stages for every request: a stage reported again at a
fraction no larger than before means the next request has started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


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


# --- cooperative cancellation -----------------------------------------------------------------------------
# A caller that may need to stop a long computation (a job service, a UI) installs a check with
# `cancellation_check(fn)`; the long loops of suture (corpus sampling, statistics, value optimization,
# template and answer generation, scoring) call `check_cancelled()` between steps, and `fn` raises to stop
# them. With no check installed the calls cost a context-variable lookup. The check is per thread/task.

_CHECK: ContextVar[Callable[[], None] | None] = ContextVar("suture_cancellation_check", default=None)


def check_cancelled() -> None:
    """Call the installed cancellation check, if any; it raises (the caller's own exception) to stop."""
    check = _CHECK.get()
    if check is not None:
        check()


@contextmanager
def cancellation_check(check: Callable[[], None]) -> Iterator[None]:
    """Install `check` for the code run inside the block (it should be cheap or rate-limit itself)."""
    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)


def generation_stoppers() -> list:
    """Stopping criteria for `model.generate` that call `check_cancelled()` after every token; empty when
    no check is installed."""
    if _CHECK.get() is None:
        return []
    import torch
    from transformers import StoppingCriteria

    class _Check(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            check_cancelled()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return [_Check()]
