"""Which model names jobs may use: the zoo plus operator-configured local models (SUTURE_MODELS)."""

from __future__ import annotations

from suture.editor.errors import SutureError
from suture.editor.zoo import zoo_names


class UnknownModelError(SutureError):
    def __init__(self, name: str, valid: list[str]):
        self.valid = valid
        super().__init__(f"unknown model {name!r}; valid models: {', '.join(valid)}")


class ModelCatalog:
    def __init__(self, extra: dict[str, str] | None = None):
        self.extra = dict(extra or {})

    def names(self) -> list[str]:
        return sorted({*zoo_names(), *self.extra})

    def ref(self, name: str) -> str:
        """What `Editor.load` takes for `name`: a local path for configured models, else the zoo name."""
        if name in self.extra:
            return self.extra[name]
        if name in zoo_names():
            return name
        raise UnknownModelError(name, self.names())
