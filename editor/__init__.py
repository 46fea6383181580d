"""suture's editing core: requests, models and site maps, key/value machinery, deltas, ledger, I/O."""

from editor.adapters import AdapterExportError, export_lora
from editor.context import EditContext
from editor.deltas import WeightBook, WeightDelta
from editor.editor import Editor
from editor.errors import (
    EditFailedError,
    GateFailedError,
    InvalidHyperparametersError,
    ModelNotFoundError,
    SutureError,
    UnknownMethodError,
    UnsupportedArchitectureError,
)
from editor.gate import Gate, GateDecision
from editor.handle import ModelHandle
from editor.ledger import EditResult, LedgerEntry
from editor.registry import EditMethod, MethodOutput, available_methods, get_method, register_method
from editor.requests import EditRequest, InvalidRequestError, from_counterfact, parse_requests

__all__ = [
    "AdapterExportError", "EditContext", "EditFailedError", "EditMethod", "EditRequest", "EditResult", "Editor",
    "Gate", "GateDecision", "GateFailedError", "InvalidHyperparametersError", "InvalidRequestError",
    "LedgerEntry", "MethodOutput", "ModelHandle", "ModelNotFoundError", "SutureError", "UnknownMethodError",
    "UnsupportedArchitectureError", "WeightBook", "WeightDelta", "available_methods", "export_lora",
    "from_counterfact", "get_method", "parse_requests", "register_method",
]
