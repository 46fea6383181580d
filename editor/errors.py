"""Typed errors. Every error a user can trigger names what was wrong and why."""


class SutureError(Exception):
    """Base class of every error suture raises on purpose."""


class UnsupportedArchitectureError(SutureError):
    def __init__(self, model_type: str, supported: list[str], detail: str | None = None):
        self.model_type = model_type
        self.supported = supported
        if detail:
            super().__init__(f"model_type {model_type!r}: {detail}")
        else:
            super().__init__(
                f"model_type {model_type!r} has no site map; supported model types: {', '.join(sorted(supported))}")


class ModelNotFoundError(SutureError):
    """A model reference is neither a directory, a .gguf file nor a zoo name."""


class UnknownMethodError(SutureError):
    def __init__(self, name: str, available: list[str], reason: str | None = None):
        self.name = name
        self.available = available
        self.reason = reason
        because = f" ({reason})" if reason else ""
        super().__init__(
            f"unknown method {name!r}{because}; available methods: {', '.join(sorted(available)) or 'none'}")


class DuplicateRegistrationError(SutureError):
    """A registry name (a method's name, a site map's model_type) that another definition already holds."""

    def __init__(self, kind: str, name: str, holder: str, newcomer: str):
        self.kind, self.name, self.holder, self.newcomer = kind, name, holder, newcomer
        super().__init__(f"{kind} {name!r} is already registered by {holder}; refusing to register {newcomer}")


class InvalidInputError(SutureError, ValueError):
    """An argument of a library call that cannot be used; the message names the argument and the reason.
    (A ValueError too, so callers that caught ValueError before still do.)"""


class InvalidHyperparametersError(SutureError):
    """Hyperparameters that do not fit a method's typed model or the loaded model."""


class InvalidDeltaError(SutureError, KeyError):
    """A weight delta that names a parameter the model does not have (or cannot have)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EditFailedError(SutureError):
    """An edit could not be computed (for example a singular key covariance)."""


class NothingToRevertError(SutureError):
    pass


class GateFailedError(SutureError):
    """A deployment gate refused a checkpoint; nothing was written."""

    def __init__(self, failures: list[str]):
        self.failures = failures
        super().__init__("gate failed, no checkpoint written: " + "; ".join(failures))
