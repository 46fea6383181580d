"""Weight changes as explicit deltas, and the book that applies them and undoes them bit for bit.

Float addition does not undo exactly ((w + d) - d != w), so the book keeps a copy of every parameter
the first time a delta touches it and reverts by restoring that copy and replaying the deltas that
remain, in order. Memory grows with the parameters touched, not with the number of edits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class WeightDelta:
    """A change of one parameter, in the parameter's own storage layout.

    Low-rank deltas keep their factors (`left @ right`); dense ones keep the full tensor. `create`
    marks a parameter that the model lacks and the delta adds (for example a zero bias made non-zero).
    """

    module: str
    param: str = "weight"
    left: torch.Tensor | None = None  # [rows, r]
    right: torch.Tensor | None = None  # [r, cols]
    dense: torch.Tensor | None = None

    @classmethod
    def low_rank(cls, module: str, left: torch.Tensor, right: torch.Tensor, transposed: bool = False,
                 param: str = "weight") -> WeightDelta:
        """`left @ right` given in (out, in) orientation; stored transposed for Conv1D-style weights."""
        if transposed:
            left, right = right.T, left.T
        return cls(module=module, param=param, left=left.contiguous(), right=right.contiguous())

    @property
    def key(self) -> str:
        return f"{self.module}.{self.param}"

    @property
    def rank(self) -> int | None:
        return self.left.shape[1] if self.left is not None else None

    def materialize(self) -> torch.Tensor:
        return self.dense if self.dense is not None else self.left @ self.right

    def norm(self) -> float:
        return float(self.materialize().float().norm())

    def to(self, device: torch.device | str) -> WeightDelta:
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return WeightDelta(self.module, self.param, move(self.left), move(self.right), move(self.dense))

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        parts = {"left": self.left, "right": self.right, "dense": self.dense}
        return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in parts.items() if v is not None}


class WeightBook:
    """Applies deltas to a model's parameters and can restore the base weights exactly."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._base: dict[str, torch.Tensor] = {}

    def _param(self, delta: WeightDelta) -> torch.nn.Parameter:
        module = self.model.get_submodule(delta.module)
        param = getattr(module, delta.param, None)
        if param is None:
            raise KeyError(f"{delta.module} has no parameter {delta.param!r}")
        return param

    @torch.no_grad()
    def apply(self, deltas: Iterable[WeightDelta]) -> None:
        for delta in deltas:
            param = self._param(delta)
            if delta.key not in self._base:
                self._base[delta.key] = param.detach().clone()
            param.add_(delta.materialize().to(device=param.device, dtype=param.dtype))

    @torch.no_grad()
    def rebuild(self, deltas: Iterable[WeightDelta]) -> None:
        """Restore every touched parameter to its base value, then apply `deltas` in order."""
        for key, base in self._base.items():
            module_path, _, name = key.rpartition(".")
            getattr(self.model.get_submodule(module_path), name).copy_(base)
        self.apply(deltas)

    @property
    def touched(self) -> list[str]:
        return list(self._base)

    def base_value(self, key: str) -> torch.Tensor | None:
        return self._base.get(key)

    @contextmanager
    def trial(self) -> Iterator[WeightBook]:
        """Deltas applied through the yielded book inside the block are undone exactly on exit
        (methods that apply their own intermediate updates, like MEMIT layer by layer)."""
        trial = WeightBook(self.model)
        try:
            yield trial
        finally:
            trial.rebuild([])

    @contextmanager
    def base_weights(self) -> Iterator[None]:
        """Temporarily run the model on its base weights (for statistics measured on the original model)."""
        swapped = []
        with torch.no_grad():
            for key, base in self._base.items():
                module_path, _, name = key.rpartition(".")
                param = getattr(self.model.get_submodule(module_path), name)
                swapped.append((param, param.detach().clone()))
                param.copy_(base)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, current in swapped:
                    param.copy_(current)
