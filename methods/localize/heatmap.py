"""A labelled heatmap PNG of a [rows x cols] matrix (a causal trace, a head attribution).

matplotlib is an optional dependency (extras "bench" and "test"); it is imported only here, when a heatmap is
drawn, and through the object-oriented API (Figure + Agg canvas), so no global pyplot backend is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from suture.editor.errors import InvalidInputError


def save_heatmap(matrix, row_labels: Sequence, col_labels: Sequence, path: str | Path, title: str = "",
                 cmap: str = "viridis", center: bool = False, colorbar_label: str = "") -> Path:
    """Write `matrix` ([rows x cols]; tensor, array or nested lists) as a PNG at `path`; returns the path.
    center=True uses a diverging colour map symmetric around zero (for signed effects)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("save_heatmap needs matplotlib: pip install 'suture[bench]'") from exc
    import numpy as np

    data = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    if data.ndim != 2:
        raise InvalidInputError(f"matrix: must be 2-D, got shape {data.shape}")
    if data.shape != (len(row_labels), len(col_labels)):
        raise InvalidInputError(
            f"matrix: shape {data.shape} does not match labels ({len(row_labels)}, {len(col_labels)})")
    rows, cols = data.shape
    fig = Figure(figsize=(max(4.0, 0.45 * cols + 2), max(3.0, 0.3 * rows + 1.5)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    kwargs = {"cmap": cmap}
    if center:
        bound = float(np.abs(data).max()) or 1.0
        kwargs = {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}
    image = ax.imshow(data, aspect="auto", interpolation="nearest", **kwargs)
    ax.set_xticks(range(cols), [str(c) for c in col_labels], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(rows), [str(r) for r in row_labels], fontsize=8)
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def save_trace_heatmap(result, kind: str, path: str | Path) -> Path:
    """A causal trace (`TraceResult`) as layers x tokens of restored P(target)."""
    tokens = [repr(t)[1:-1] + ("*" if result.subject_first <= i <= result.subject_last else "")
              for i, t in enumerate(result.tokens)]
    title = (f"{kind}: restored P({result.target!r}) "
             f"(clean {result.clean_prob:.3f}, corrupt {result.corrupted_prob:.3f})")
    return save_heatmap(result.matrix(kind), result.layers, tokens, path, title=title)


def save_head_heatmap(result, path: str | Path) -> Path:
    """A head attribution (`HeadAttribution`) as layers x heads of the signed effect."""
    return save_heatmap(result.matrix(), result.layers, list(range(result.n_heads)), path,
                        title="head patching effect on logit difference", center=True)
