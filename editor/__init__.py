"""suture's editing core: requests, models and site maps, key/value machinery, deltas, ledger, I/O."""

from suture.editor.adapters import AdapterExportError, export_lora
from suture.editor.context import EditContext
from suture.editor.deltas import WeightBook, WeightDelta
from suture.editor.editor import Editor
from suture.editor.errors import (
    DuplicateRegistrationError,
    EditFailedError,
    GateFailedError,
    InvalidDeltaError,
    InvalidHyperparametersError,
    InvalidInputError,
    ModelNotFoundError,
    SutureError,
    UnknownMethodError,
    UnsupportedArchitectureError,
)
from suture.editor.gate import Gate, GateDecision
from suture.editor.handle import ModelHandle
from suture.editor.ledger import EditResult, LedgerEntry
from suture.editor.registry import (
    EditMethod,
    MethodOutput,
    available_methods,
    get_method,
    method_load_errors,
    register_method,
)
from suture.editor.requests import EditRequest, InvalidRequestError, from_counterfact, parse_requests
from suture.editor.sites import register_site_map, site_map_load_errors, supported_model_types
from suture.editor.verdicts import EditRequestsFailedError, RequestVerdict

__all__ = [
    "AdapterExportError", "DuplicateRegistrationError", "EditContext", "EditFailedError", "EditMethod",
    "EditRequest", "EditRequestsFailedError", "EditResult", "Editor", "Gate", "GateDecision", "GateFailedError",
    "InvalidDeltaError",
    "InvalidHyperparametersError", "InvalidInputError", "InvalidRequestError", "LedgerEntry", "MethodOutput",
    "ModelHandle", "ModelNotFoundError", "RequestVerdict", "SutureError", "UnknownMethodError",
    "UnsupportedArchitectureError",
    "WeightBook", "WeightDelta", "available_methods", "export_lora", "from_counterfact", "get_method",
    "method_load_errors", "parse_requests", "register_method", "register_site_map", "site_map_load_errors",
    "supported_model_types",
]
