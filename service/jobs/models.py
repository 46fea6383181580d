"""Loaded models of one worker, least recently used out. Every job gets its model with an empty ledger,
and hands it back reverted to the base weights (revert is bit-exact), so loading is paid once."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from suture.editor import Editor
from suture.service.jobs.catalog import ModelCatalog


class LoadedModels:
    def __init__(self, catalog: ModelCatalog, capacity: int = 2, device: str | None = None,
                 dtype: str | None = None):
        self.catalog = catalog
        self.capacity = capacity
        self.device, self.dtype = device, dtype
        self._editors: OrderedDict[str, Editor] = OrderedDict()

    def names(self) -> list[str]:
        return list(self._editors)

    @contextmanager
    def checkout(self, name: str) -> Iterator[Editor]:
        editor = self._editors.pop(name, None)
        if editor is None:
            editor = Editor.load(self.catalog.ref(name), device=self.device, dtype=self.dtype)
        try:
            yield editor
        finally:
            editor.reset()  # also what an error left outside the ledger; if this raises, the model is dropped
            self._editors[name] = editor  # most recently used last
            while len(self._editors) > self.capacity:
                self._editors.popitem(last=False)
