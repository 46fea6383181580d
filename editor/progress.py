"""One overall fraction done from an edit's (stage, fraction) reports; and the cooperative cancellation
check that long loops call.

`Editor.apply` reports each of a method's compute calls (one per request for one-at-a-time methods, one per
group for grouped ones) as its share of the whole edit, naming the call in the stage ("value (request 3/10)",
"value (group 2/32)"). A method's stages each run from 0 to 1 within that share, so the overall fraction is
the largest reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class ProgressTracker:
    def __init__(self) -> None:
        self.done = 0.0

    def update(self, fraction: float) -> float:
        """Record a report; return the overall fraction done (never decreasing)."""
        self.done = max(self.done, min(max(float(fraction), 0.0), 1.0))
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
