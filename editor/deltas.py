"""Weight changes as explicit deltas, and the book that applies them and undoes them bit for bit.

Float addition does not undo exactly ((w + d) - d != w), so the book keeps a copy of every parameter
the first time a delta touches it and reverts by restoring that copy and replaying the deltas that
remain, in order. Memory grows with the parameters touched, not with the number of edits.

A delta with `create=True` may target a parameter the module lacks (a bias of a bias-free projection):
the book then registers a zero parameter first and records that it made it. Its base value is "absent",
so a rebuild removes it again (the module's slot is put back as it was, e.g. `bias=None`) before
replaying the remaining deltas, which re-create it only if one of them still needs it. A full revert
therefore leaves the module structure and state_dict exactly as loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from suture.editor.errors import InvalidDeltaError


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
    create: bool = False

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

    def scaled(self, factor: float) -> WeightDelta:
        """The same change times `factor` (a low-rank delta keeps its rank: only `left` is scaled)."""
        if self.dense is not None:
            return WeightDelta(self.module, self.param, dense=self.dense * factor, create=self.create)
        return WeightDelta(self.module, self.param, self.left * factor, self.right, create=self.create)

    def to(self, device: torch.device | str) -> WeightDelta:
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return WeightDelta(self.module, self.param, move(self.left), move(self.right), move(self.dense), self.create)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        parts = {"left": self.left, "right": self.right, "dense": self.dense}
        return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in parts.items() if v is not None}


@dataclass(frozen=True)
class _Created:
    """Base record of a parameter the book added: `had_slot` says whether the module had registered the
    name as an empty parameter (`bias=None`), so removal restores exactly that."""

    had_slot: bool


class WeightBook:
    """Applies deltas to a model's parameters and can restore the base weights exactly."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._base: dict[str, torch.Tensor | _Created] = {}

    def _param(self, delta: WeightDelta) -> torch.nn.Parameter:
        module = self.model.get_submodule(delta.module)
        param = getattr(module, delta.param, None)
        if param is None and delta.create:
            param = self._create(module, delta)
        if param is None:
            raise InvalidDeltaError(f"{delta.key}: {delta.module} has no parameter {delta.param!r}")
        return param

    def _create(self, module: nn.Module, delta: WeightDelta) -> torch.nn.Parameter:
        if hasattr(module, delta.param) and delta.param not in module._parameters:
            raise InvalidDeltaError(f"{delta.key}: {delta.module} has a non-parameter attribute {delta.param!r}; "
                           "cannot create a parameter there")
        like = getattr(module, "weight", None)
        like = like if isinstance(like, torch.Tensor) else delta.materialize()
        shape = delta.materialize().shape
        param = torch.nn.Parameter(torch.zeros(shape, dtype=like.dtype, device=like.device), requires_grad=False)
        self._base.setdefault(delta.key, _Created(had_slot=delta.param in module._parameters))
        module.register_parameter(delta.param, param)
        return param

    def _remove(self, key: str, record: _Created) -> None:
        module_path, _, name = key.rpartition(".")
        module = self.model.get_submodule(module_path)
        if record.had_slot:
            module.register_parameter(name, None)
        else:
            module._parameters.pop(name, None)

    def _present(self, key: str) -> torch.nn.Parameter | None:
        module_path, _, name = key.rpartition(".")
        return getattr(self.model.get_submodule(module_path), name, None)

    @torch.no_grad()
    def apply(self, deltas: Iterable[WeightDelta]) -> None:
        for delta in deltas:
            change = delta.materialize()
            if not torch.isfinite(change).all():  # a NaN written into a weight silently ruins every answer
                raise InvalidDeltaError(f"{delta.key}: the change holds NaN or infinite values; not written")
            param = self._param(delta)
            if delta.key not in self._base:
                self._base[delta.key] = param.detach().clone()
            param.add_(change.to(device=param.device, dtype=param.dtype))

    @torch.no_grad()
    def rebuild(self, deltas: Iterable[WeightDelta]) -> None:
        """Restore every touched parameter to its base value (removing created ones), then apply `deltas`."""
        for key, base in self._base.items():
            if isinstance(base, _Created):
                self._remove(key, base)
            else:
                self._present(key).copy_(base)
        self.apply(deltas)

    @property
    def touched(self) -> list[str]:
        """Parameters the book has changed and that exist now (created ones only while present)."""
        return [k for k, b in self._base.items() if not isinstance(b, _Created) or self._present(k) is not None]

    @property
    def created(self) -> list[str]:
        """Parameters the model did not have at load time and that deltas currently add."""
        return [k for k, b in self._base.items() if isinstance(b, _Created) and self._present(k) is not None]

    def base_value(self, key: str) -> torch.Tensor | None:
        """The loaded value of `key`; zeros for a created parameter (the module behaves as with a zero one)."""
        base = self._base.get(key)
        if isinstance(base, _Created):
            current = self._present(key)
            return None if current is None else torch.zeros_like(current)
        return base

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
        """Temporarily run the model on its base weights (for statistics measured on the original model);
        created parameters are taken out for the duration."""
        swapped, removed = [], []
        with torch.no_grad():
            for key, base in self._base.items():
                param = self._present(key)
                if param is None:
                    continue
                if isinstance(base, _Created):
                    removed.append((key, base, param))
                    self._remove(key, base)
                else:
                    swapped.append((param, param.detach().clone()))
                    param.copy_(base)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, current in swapped:
                    param.copy_(current)
                for key, _, param in removed:
                    module_path, _, name = key.rpartition(".")
                    self.model.get_submodule(module_path).register_parameter(name, param)
