"""Localization tools (not edit methods): where in the model does a behaviour live?

- causal_trace: ROME-style causal tracing of a fact over layers x token positions.
- head_attribution: last-token activation patching of each query head, ranked by a logit difference.
- heatmap: PNG heatmaps of either result (needs matplotlib).
"""

from suture.methods.localize.causal_trace import TraceResult, embedding_std, restored_prob, trace
from suture.methods.localize.head_attribution import HeadAttribution, attribute_heads
from suture.methods.localize.heatmap import save_head_heatmap, save_heatmap, save_trace_heatmap

__all__ = ["HeadAttribution", "TraceResult", "attribute_heads", "embedding_std", "restored_prob",
           "save_head_heatmap", "save_heatmap", "save_trace_heatmap", "trace"]
