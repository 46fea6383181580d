"""What the head interventions share: no edit requests, required layer/heads, checks against the model."""

from __future__ import annotations

from typing import Any, ClassVar

from suture.editor import EditMethod, InvalidHyperparametersError
from suture.editor.handle import ModelHandle
from suture.methods.heads.hparams import HeadsHParams


class HeadMethod(EditMethod):
    """An exact change of one layer's attention output projection, driven by hyperparameters alone."""

    takes_requests: ClassVar[bool] = False

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        return {}  # `layer` and `heads` have no sensible default

    def fail(self, field: str, message: str) -> InvalidHyperparametersError:
        return InvalidHyperparametersError(f"{self.name}: hyperparameter '{field}': {message}")

    def check_hparams(self, handle: ModelHandle, hparams: HeadsHParams) -> None:
        if not 0 <= hparams.layer < handle.n_layers:
            raise self.fail("layer", f"{hparams.layer} is outside 0..{handle.n_layers - 1}")
        layout = handle.sites.head_layout(handle.model.config)
        bad = [h for h in hparams.heads if not 0 <= h < layout.n_heads]
        if bad:
            verb = "is" if len(bad) == 1 else "are"
            raise self.fail("heads", f"{', '.join(map(str, bad))} {verb} outside 0..{layout.n_heads - 1} (the "
                            f"model has {layout.n_heads} query heads of size {layout.head_dim}, "
                            f"{layout.n_kv_heads} key/value heads)")
