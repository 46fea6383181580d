"""The open method registry: a decorator for methods in any package, plus the `suture.methods`
entry-point group through which installed packages (ours included) make their methods known."""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from suture.editor.deltas import WeightDelta
from suture.editor.errors import DuplicateRegistrationError, InvalidHyperparametersError, UnknownMethodError
from suture.editor.kv.shared_keys import key_groups
from suture.editor.requests import EditRequest

if TYPE_CHECKING:
    from suture.editor.context import EditContext
    from suture.editor.handle import ModelHandle

ENTRY_POINT_GROUP = "suture.methods"


@dataclass
class MethodOutput:
    deltas: list[WeightDelta]
    details: dict[str, Any] = field(default_factory=dict)
    # Tensors a method keeps with the ledger entry for later edits (e.g. the keys it wrote, which
    # null-space editing must preserve); reverting the entry drops them with it.
    artifacts: dict[str, Any] = field(default_factory=dict)
    # Why a request may not take, by its index in the call: added to its verdict's reason if it fails.
    hints: dict[int, str] = field(default_factory=dict)


def non_finite_field(value: Any, loc: str = "") -> str | None:
    """The dotted location of the first NaN or infinite float in validated hyperparameters (a model's
    `model_dump()`), else None. Pydantic turns the strings "NaN" and "1e400" into such floats."""
    if isinstance(value, float) and not math.isfinite(value):
        return loc or "(root)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list | tuple) else ()
    for key, item in items:
        where = non_finite_field(item, f"{loc}.{key}" if loc else str(key))
        if where is not None:
            return where
    return None


class EditMethod(ABC):
    """A way of turning edit requests into weight deltas.

    `one_request_at_a_time` methods (ROME) see each request on the model already changed by the previous
    ones; the editor handles that loop so methods do not. Methods with `takes_requests = False` (head
    interventions) are driven by their hyperparameters alone and get an empty request list.
    """

    name: ClassVar[str]
    hparams_model: ClassVar[type[BaseModel]]
    one_request_at_a_time: ClassVar[bool] = False
    takes_requests: ClassVar[bool] = True

    def default_hparams(self, handle: ModelHandle) -> BaseModel | dict[str, Any]:
        """Defaults the overrides are merged into; a dict where some fields have no default (then the
        typed model reports them as missing)."""
        return self.hparams_model()

    def resolve_hparams(self, handle: ModelHandle, overrides: dict[str, Any]) -> BaseModel:
        defaults = self.default_hparams(handle)
        base = defaults.model_dump() if isinstance(defaults, BaseModel) else dict(defaults)
        try:
            hparams = self.hparams_model.model_validate(_deep_merge(base, overrides))
        except ValidationError as exc:
            raise InvalidHyperparametersError(f"{self.name}: {_describe(exc)}") from None
        where = non_finite_field(hparams.model_dump())
        if where is not None:  # no method means a NaN or an infinity
            raise InvalidHyperparametersError(f"{self.name}: hyperparameter '{where}': must be a finite number")
        self.check_hparams(handle, hparams)
        return hparams

    def check_hparams(self, handle: ModelHandle, hparams: BaseModel) -> None:  # noqa: B027  (optional hook)
        """Checks that need the model (layer indices in range, ...); raise InvalidHyperparametersError."""

    def request_groups(self, requests: list[EditRequest], hparams: BaseModel) -> list[list[int]]:
        """Positions of the requests each `compute` call gets, in order. The editor applies each call's
        deltas before the next, which also finds the earlier calls' artifacts in `ctx.history()` (as the
        ledger's last entry). One call for all by default; one call per key for one-at-a-time methods."""
        if self.one_request_at_a_time:
            return key_groups(requests)
        return [list(range(len(requests)))]

    @abstractmethod
    def compute(self, ctx: EditContext, requests: list[EditRequest], hparams: BaseModel) -> MethodOutput:
        """The deltas realizing `requests`; must not leave the model changed."""


# What pydantic puts in an error's location for each member of a union ("int", "literal['auto']",
# "function-after[...]", a model's class name): not a field, so left out of the path a user reads.
_UNION_MEMBER = re.compile(r"^(int|float|str|bool|none|(literal|list|dict|tuple|set|function-\w+)\[.*\]|[A-Z]\w*)$")


def _describe(exc: ValidationError) -> str:
    """One clause per field path; the alternatives of a union are joined under their field's name."""
    reasons: dict[str, list[str]] = {}
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"] if not (isinstance(p, str) and _UNION_MEMBER.match(p)))
        reasons.setdefault(path, []).append(error["msg"])
    return "; ".join(f"hyperparameter '{path}': {' or '.join(dict.fromkeys(msgs))}" if path
                     else f"hyperparameters: {' or '.join(msgs)}" for path, msgs in reasons.items())


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides win; nested models are overridden field by field (corpus={"n_samples": 50})."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, BaseModel):
            value = value.model_dump()
        merged[key] = _deep_merge(base[key], value) if isinstance(value, dict) and isinstance(
            base.get(key), dict) else value
    return merged


_REGISTRY: dict[str, type[EditMethod]] = {}
_LOADED_ENTRY_POINTS: set[str] = set()
_LOAD_ERRORS: dict[str, str] = {}  # entry-point name -> why it could not be loaded


def register_method(cls: type[EditMethod]) -> type[EditMethod]:
    """Class decorator: make a method available by its `name`.

    Raises:
        TypeError: the class lacks `name` or `hparams_model`.
        DuplicateRegistrationError: another class already holds the name (the same class, or the same
            definition imported again, is accepted).
    """
    if not getattr(cls, "name", None) or not getattr(cls, "hparams_model", None):
        raise TypeError(f"{cls.__name__} needs class attributes `name` and `hparams_model`")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and qualified_name(existing) != qualified_name(cls):
        raise DuplicateRegistrationError("method", cls.name, qualified_name(existing), qualified_name(cls))
    _REGISTRY[cls.name] = cls
    return cls


def qualified_name(obj: object) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _load_entry_points() -> None:
    """Import every not yet loaded entry point of the group, each on its own: one that fails is recorded
    (see `method_load_errors`) and does not keep the others from loading."""
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in _LOADED_ENTRY_POINTS:
            continue
        _LOADED_ENTRY_POINTS.add(entry_point.name)
        try:
            entry_point.load()  # importing the module runs its @register_method
        except Exception as exc:  # noqa: BLE001  (a third-party plugin may raise anything on import)
            _LOAD_ERRORS[entry_point.name] = (
                f"entry point {entry_point.name} = {entry_point.value!r} failed to load: "
                f"{type(exc).__name__}: {exc}")
            continue
        if entry_point.name not in _REGISTRY:
            _LOAD_ERRORS[entry_point.name] = (
                f"entry point {entry_point.name} = {entry_point.value!r} loaded but registered no method "
                f"named {entry_point.name!r}")


def available_methods() -> list[str]:
    """Names of the registered methods, entry points of installed packages included."""
    _load_entry_points()
    return sorted(_REGISTRY)


def method_load_errors() -> dict[str, str]:
    """Entry points of the `suture.methods` group that could not be loaded: name -> the reason."""
    _load_entry_points()
    return {name: error for name, error in sorted(_LOAD_ERRORS.items()) if name not in _REGISTRY}


def get_method(name: str) -> EditMethod:
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        if name in _LOAD_ERRORS:
            raise UnknownMethodError(name, available_methods(), reason=_LOAD_ERRORS[name])
        raise UnknownMethodError(name, available_methods())
    return _REGISTRY[name]()
