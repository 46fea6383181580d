"""suture: model editing and surgical repair for transformer language models.

The repository's folders install as one namespace: `suture.editor` (the floor: requests, models, site
maps, key/value machinery, deltas, ledger), `suture.methods` (ROME, MEMIT, head interventions,
localization), `suture.evaluation` (metrics, gate, reports), `suture.repair` (the minimal-repair search),
`suture.service` (REST API, job store, Ray workers) and `suture.cli` (the `suture` command).

The names below are the public face. They load on first use, so `import suture` (and the CLI's start)
does not pay for torch and transformers until something needs them.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("suture")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ["Editor", "EditRequest", "EditResult", "EditMethod", "MethodOutput", "WeightDelta", "EditContext",
         "register_method", "get_method", "available_methods", "method_load_errors", "register_site_map",
         "SutureError", "InvalidRequestError", "InvalidInputError", "InvalidHyperparametersError", "EditFailedError",
         "GateFailedError", "ModelNotFoundError", "UnknownMethodError", "UnsupportedArchitectureError",
         "DuplicateRegistrationError"],
        "suture.editor"),
    **dict.fromkeys(["evaluate", "EvaluationOptions", "EvaluationReport", "GatePolicy", "load_cases"],
                    "suture.evaluation"),
    **dict.fromkeys(["search_repair", "RepairConfig", "RepairResult"], "suture.repair"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'suture' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily above
    from suture.editor import (  # noqa: F401
        DuplicateRegistrationError,
        EditContext,
        EditFailedError,
        EditMethod,
        Editor,
        EditRequest,
        EditResult,
        GateFailedError,
        InvalidHyperparametersError,
        InvalidInputError,
        InvalidRequestError,
        MethodOutput,
        ModelNotFoundError,
        SutureError,
        UnknownMethodError,
        UnsupportedArchitectureError,
        WeightDelta,
        available_methods,
        get_method,
        method_load_errors,
        register_method,
        register_site_map,
    )
    from suture.evaluation import EvaluationOptions, EvaluationReport, GatePolicy, evaluate, load_cases  # noqa: F401
    from suture.repair import RepairConfig, RepairResult, search_repair  # noqa: F401
