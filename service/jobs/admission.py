"""Admission of a job before it is queued: everything that can be checked without loading weights.

- Hyperparameters against the method's typed model, merged into the method's defaults for the model,
  and the method's own model checks (layer indices, head counts) on a config-only stand-in of the model
  (its `config.json`; no weights are read). A model whose config is not on disk yet (a zoo model not
  converted) gets the typed checks only.
- Every path-valued field (`dataset.path`, each corpus `source` in the hyperparameters) must name a
  regular file of bounded size inside the server's data directories (`files.py`).
- The operator's limits (`ServiceSettings.limits`) on everything a request can make expensive, and the
  job's time limit against the operator's.

Each refusal is an `Inadmissible` naming the request field (a dotted path, e.g. `hparams.corpus.n_samples`).
"""

from __future__ import annotations

import copy
import functools
import typing
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel, ValidationError

from suture.editor.errors import InvalidHyperparametersError, SutureError
from suture.editor.kv.corpus import CorpusSpec
from suture.editor.registry import EditMethod, _deep_merge, non_finite_field
from suture.editor.sites import site_map_for
from suture.service.jobs.catalog import ModelCatalog
from suture.service.jobs.files import FileRefused, confined_file, data_roots
from suture.service.schemas import JobCreate
from suture.service.settings import JobLimits, ServiceSettings


class Inadmissible(SutureError):
    """The job cannot be queued: `field` (dotted) and why."""

    def __init__(self, field: str, message: str, kind: str = "value_error"):
        self.field, self.message, self.kind = field, message, kind
        super().__init__(f"{field}: {message}")

    def detail(self) -> list[dict[str, Any]]:
        """FastAPI's 422 shape: [{loc, msg, type}]."""
        return [{"loc": ["body", *self.field.split(".")], "msg": self.message, "type": self.kind}]


# --- the model, from its config alone ---------------------------------------------------------------------

@dataclass
class ConfigHandle:
    """What `default_hparams`/`check_hparams` read of a model handle, from its config (no weights)."""

    config: Any
    sites: Any
    n_layers: int

    @property
    def model(self) -> SimpleNamespace:
        return SimpleNamespace(config=self.config)


@functools.lru_cache(maxsize=32)
def _config_handle(directory: str) -> ConfigHandle | None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        return ConfigHandle(config=config, sites=site_map_for(config), n_layers=int(config.num_hidden_layers))
    except Exception:  # noqa: BLE001  (no config yet, or one we cannot read: the typed checks still run)
        return None


def config_handle(catalog: ModelCatalog, model: str) -> ConfigHandle | None:
    """The stand-in of `model` when its config is on disk (an operator's model directory, or a zoo model
    already converted); None otherwise."""
    ref = catalog.ref(model)
    directory = Path(ref).expanduser()
    if not directory.is_dir():
        from suture.editor.paths import suture_home

        directory = suture_home() / "models" / ref
    if not (directory / "config.json").is_file():
        return None
    return _config_handle(str(directory.resolve()))


# --- hyperparameters ----------------------------------------------------------------------------------------

def _loc(loc: tuple) -> str:
    return ".".join(["hparams", *map(str, loc)])


def _from_validation(exc: ValidationError, skip_missing: bool = False) -> Inadmissible | None:
    for error in exc.errors():
        if skip_missing and error["type"] == "missing":
            continue
        return Inadmissible(_loc(error["loc"]), error["msg"], error["type"])
    return None


def _from_method_error(exc: InvalidHyperparametersError) -> Inadmissible:
    text = str(exc)
    field = "hparams"
    if "hyperparameter '" in text:
        field = _loc((text.split("hyperparameter '", 1)[1].split("'", 1)[0],))
    return Inadmissible(field, text)


def check_hparams(method: EditMethod, overrides: dict[str, Any], handle: ConfigHandle | None) -> dict[str, Any]:
    """The hyperparameters the job will run with (overrides merged into the defaults), as JSON; raises
    Inadmissible naming the first bad one. Without a handle, fields whose default comes from the model
    may be missing (they are filled at run time); everything given is still type-checked."""
    defaults: dict[str, Any] | None = None
    if handle is not None:
        try:
            found = method.default_hparams(handle)
            defaults = found.model_dump() if isinstance(found, BaseModel) else dict(found)
        except InvalidHyperparametersError as exc:
            raise _from_method_error(exc) from None
        except Exception:  # noqa: BLE001  (a method whose defaults need the weights: typed checks only)
            defaults = None
    if defaults is None:
        try:
            method.hparams_model.model_validate(overrides)
        except ValidationError as exc:
            problem = _from_validation(exc, skip_missing=True)
            if problem is not None:
                raise problem from None
        return overrides
    try:
        hparams = method.hparams_model.model_validate(_deep_merge(defaults, overrides))
    except ValidationError as exc:
        raise _from_validation(exc) from None
    where = non_finite_field(hparams.model_dump())
    if where is not None:  # "NaN" and "1e400" sent as strings validate to floats
        raise Inadmissible(_loc(tuple(where.split("."))), "must be a finite number", "finite_number")
    try:
        method.check_hparams(handle, hparams)
    except InvalidHyperparametersError as exc:
        raise _from_method_error(exc) from None
    except Exception:  # noqa: BLE001  (a check that needs the loaded model runs when the job runs)
        pass
    return hparams.model_dump(mode="json")


def _unwrap(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [a for arg in args for a in _unwrap(arg)] if args else [annotation]


def corpus_sources(model: type[BaseModel], data: Any, loc: tuple = ()) -> list[tuple[str, str]]:
    """(dotted field, value) of every corpus `source` in `data` that is a file (not "model"), found by
    following the typed model's fields of type CorpusSpec (nested models and lists of them included)."""
    if not isinstance(data, dict):
        return []
    found = []
    for name, field in model.model_fields.items():
        value = data.get(name)
        for kind in _unwrap(field.annotation):
            if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
                continue
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                where = (*loc, name, i) if isinstance(value, list) else (*loc, name)
                if issubclass(kind, CorpusSpec):
                    if isinstance(item, dict) and isinstance(item.get("source"), str) and item["source"] != "model":
                        found.append((_loc((*where, "source")), item["source"]))
                else:
                    found += corpus_sources(kind, item, where)
    return found


# --- limits -------------------------------------------------------------------------------------------------

_NUMERIC = {"n_samples": "max_corpus_samples", "max_tokens": "max_corpus_tokens", "steps": "max_steps",
            "batch_size": "max_batch_size", "chunk_size": "max_batch_size", "fluency_prompts": "max_prompts",
            "answer_tokens": "max_generated_tokens", "neighbor_tokens": "max_generated_tokens",
            "chat_tokens": "max_generated_tokens", "fluency_tokens": "max_generated_tokens"}


def _number(value: Any) -> float | None:
    """`value` as the number a method will see: pydantic also accepts numbers sent as strings ("1e9")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def check_bounds(data: Any, field: str, limits: JobLimits) -> None:
    """Every number named in `_NUMERIC`, template groups, list lengths and string lengths in `data`."""
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{field}.{key}"
            limit = _NUMERIC.get(key)
            number = _number(value)
            if limit is not None and number is not None and number > getattr(limits, limit):
                raise Inadmissible(where, f"{value} is above this server's maximum {getattr(limits, limit)} "
                                          f"(limits.{limit})", "less_than_equal")
            if key == "groups" and isinstance(value, list):
                _check_groups(value, where, limits)
            check_bounds(value, where, limits)
    elif isinstance(data, list):
        if data and isinstance(data[0], str | dict) and len(data) > limits.max_prompts:
            raise Inadmissible(field, f"{len(data)} entries; this server takes at most {limits.max_prompts} "
                                      "(limits.max_prompts)", "too_long")
        for i, item in enumerate(data):
            check_bounds(item, f"{field}.{i}", limits)
    elif isinstance(data, str) and len(data) > limits.max_text_chars:
        raise Inadmissible(field, f"{len(data)} characters; this server takes at most {limits.max_text_chars} "
                                  "(limits.max_text_chars)", "too_long")


def _check_groups(groups: list, field: str, limits: JobLimits) -> None:
    pairs = [(_number(g[0]), _number(g[1])) for g in groups if isinstance(g, list | tuple) and len(g) == 2]
    pairs = [(length, count) for length, count in pairs if length is not None and count is not None]
    for i, (length, count) in enumerate(pairs):  # a negative count would let the sum hide a huge one
        if length < 1 or count < 0:
            raise Inadmissible(f"{field}.{i}", "a group is (tokens >= 1, prefixes >= 0)", "greater_than_equal")
    if sum(count for _, count in pairs) > limits.max_templates:
        raise Inadmissible(field, f"{sum(c for _, c in pairs)} context prefixes in all; this server takes at most "
                                  f"{limits.max_templates} (limits.max_templates)", "less_than_equal")
    for i, (length, _) in enumerate(pairs):
        if length > limits.max_template_tokens:
            raise Inadmissible(f"{field}.{i}.0", f"{length} tokens; this server takes at most "
                                                 f"{limits.max_template_tokens} (limits.max_template_tokens)",
                               "less_than_equal")


# --- the whole job ------------------------------------------------------------------------------------------

def admit(body: JobCreate, method: EditMethod | None, settings: ServiceSettings,
          catalog: ModelCatalog) -> dict[str, Any] | None:
    """Check `body` (model and method already known to exist); return the resolved hyperparameters (JSON)
    when there is a method. Raises Inadmissible."""
    limits = settings.limits
    if body.requests is not None and len(body.requests) > limits.max_requests:
        raise Inadmissible("requests", f"{len(body.requests)} requests; this server takes at most "
                                       f"{limits.max_requests} per job (limits.max_requests)", "too_long")
    for i, request in enumerate(body.requests or []):  # each one: the list itself is bounded by max_requests
        check_bounds(request.model_dump(), f"requests.{i}", limits)
    roots = data_roots(settings.data_dir, settings.allowed_dirs)
    if body.dataset is not None:
        if body.dataset.limit is not None and body.dataset.limit > limits.max_requests:
            raise Inadmissible("dataset.limit", f"{body.dataset.limit} is above this server's maximum "
                                                f"{limits.max_requests} (limits.max_requests)", "less_than_equal")
        _confine(body.dataset.path, "dataset.path", roots, limits)
    if body.time_limit is not None and body.time_limit > settings.job_time_limit:
        raise Inadmissible("time_limit", f"{body.time_limit} s is above this server's limit of "
                                         f"{settings.job_time_limit} s", "less_than_equal")
    if body.evaluation is not None:
        check_bounds(body.evaluation.model_dump(), "evaluation", limits)
    if body.gate is not None:
        check_bounds(body.gate.options.model_dump(), "gate.options", limits)
    if method is None:
        return None
    handle = config_handle(catalog, body.model)
    resolved = check_hparams(method, body.hparams, handle)
    check_bounds(resolved, "hparams", limits)
    for field, value in corpus_sources(method.hparams_model, resolved):
        _confine(value, field, roots, limits)
    return resolved


def _confine(value: str, field: str, roots: list[Path], limits: JobLimits) -> Path:
    try:
        return confined_file(value, field, roots, limits.max_file_bytes)
    except FileRefused as exc:
        raise Inadmissible(field, str(exc).split(": ", 1)[1]) from None


def confine_corpus_sources(method: EditMethod, hparams: dict[str, Any], roots: list[Path],
                           limits: JobLimits) -> dict[str, Any]:
    """`hparams` with every corpus file source replaced by its confined absolute path (checked again at run
    time: the file may have changed since submission). Raises FileRefused."""
    out = copy.deepcopy(hparams)
    for field, value in corpus_sources(method.hparams_model, hparams):
        path = confined_file(value, field, roots, limits.max_file_bytes)
        target = out
        parts = field.split(".")[1:-1]
        for part in parts:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target["source"] = str(path)
    return out
