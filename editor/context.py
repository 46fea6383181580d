"""What a method may use while computing an edit: the model, shared caches and progress reporting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from suture.editor.deltas import WeightBook
from suture.editor.handle import ModelHandle
from suture.editor.kv.anchors import mean_output_norm
from suture.editor.kv.corpus import CorpusSpec
from suture.editor.kv.key_mean import mean_key
from suture.editor.kv.output_fisher import output_fisher
from suture.editor.kv.stats import Site, second_moment
from suture.editor.kv.templates import TemplateSpec, context_templates

Progress = Callable[[str, float], None]


@dataclass
class EditContext:
    handle: ModelHandle
    weights: WeightBook
    progress: Progress | None = None
    # the editor's ledger entries so far, oldest first (and an edit's earlier groups while it is applied)
    history: Callable[[], Sequence] = list
    # Values methods derive from statistics or from the ledger and keep between edits (null-space projectors,
    # running sums of earlier keys); each key names what its value was computed from.
    memo: dict = field(default_factory=dict)
    # (entry id, request position) of ledger requests the edit being applied writes again (editor/refresh.py):
    # methods that hold earlier edits' keys fixed do not hold these, or they would hold what must change.
    released: frozenset[tuple[str, int]] = frozenset()
    _templates: dict[str, list[str]] = field(default_factory=dict)
    _mom2: dict[tuple, torch.Tensor] = field(default_factory=dict)

    def artifacts(self, name: str) -> list:
        """Artifact `name` of every earlier ledger entry that kept one (one-at-a-time methods keep a list)."""
        out = []
        for entry in self.history():
            value = entry.artifacts.get(name)
            if value is not None:
                out += value if isinstance(value, list) else [value]
        return out

    def report(self, stage: str, fraction: float) -> None:
        if self.progress:
            self.progress(stage, fraction)

    def templates(self, spec: TemplateSpec) -> list[str]:
        if spec.key() not in self._templates:
            with self.weights.base_weights():
                self._templates[spec.key()] = context_templates(self.handle, spec)
        return self._templates[spec.key()]

    def anchor_norm(self, layer: int, corpus: CorpusSpec) -> float:
        """Mean MLP-output norm at `layer` on the base model (NAS's anchor)."""
        with self.weights.base_weights():
            return mean_output_norm(self.handle, layer, corpus)

    def output_fisher(self, layers: list[int], corpus: CorpusSpec, n_texts: int) -> dict[int, torch.Tensor]:
        """{layer: G} the output-Fisher metric of each layer's MLP output on the base model (output_fisher.py)."""
        key = ("fisher", tuple(layers), n_texts, corpus.model_dump_json())
        if key not in self.memo:
            with self.weights.base_weights():
                self.memo[key] = output_fisher(self.handle, layers, corpus, n_texts)
        return self.memo[key]

    def mean_key(self, layers: list[int], corpus: CorpusSpec) -> dict[int, torch.Tensor]:
        """{layer: μ} the mean MLP key of each layer on the base model, each text's first position left out
        (key_mean.py; memory, then disk cache)."""
        key = ("mean_key", tuple(layers), corpus.model_dump_json())
        if key not in self.memo:
            with self.weights.base_weights():
                self.memo[key] = mean_key(self.handle, layers, corpus)
        return self.memo[key]

    def second_moment(self, layers: list[int], corpus: CorpusSpec, site: Site = "mlp_out") -> dict[int, torch.Tensor]:
        """C = E[k kᵀ] of the site's input per layer, measured on the base model (memory, then disk cache)."""
        key = lambda layer: (site, layer, corpus.model_dump_json())  # noqa: E731
        missing = [layer for layer in layers if key(layer) not in self._mom2]
        if missing:
            self.report("statistics", 0.0)  # the corpus is sampled (or read) and streamed now
            with self.weights.base_weights():
                for layer, mom2 in second_moment(self.handle, missing, corpus, site).items():
                    self._mom2[key(layer)] = mom2
        return {layer: self._mom2[key(layer)] for layer in layers}
