"""Small inline-SVG charts for the HTML report: no plotting library, no external resources.

Every chart is a self-contained `<svg class="plot" id=...>` string scaled by its viewBox; all text passes
through `html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 1040
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:12px"
AXIS = "#6b7280"
GRID = "#e5e7eb"
MAX_LABEL = 26
CHAR_WIDTH = 7.2  # rough width of one 12px character, for layout


@dataclass
class Series:
    """One colored quantity per row; `before` may be None for single-value series."""

    name: str
    color: str
    after: Sequence[float | None]
    before: Sequence[float | None] | None = None


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _num(value: float) -> str:
    return f"{value:.4g}"


def _open(chart_id: str, height: int, title: str) -> list[str]:
    return [f'<svg class="plot" id="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'viewBox="0 0 {WIDTH} {height}" width="100%" style="{FONT};max-width:{WIDTH}px">',
            f"<title>{escape(title)}</title>"]


def _text(x: float, y: float, text: str, anchor: str = "start", fill: str = "#111827", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{extra}>{escape(text)}</text>'


def _scale(d0: float, d1: float, r0: float, r1: float) -> Callable[[float], float]:
    span = (d1 - d0) or 1.0
    return lambda v: r0 + (v - d0) / span * (r1 - r0)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= step * m)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _legend(items: list[tuple[str, str]], x: float, y: float, note: str = "") -> list[str]:
    out = []
    for name, color in items:
        out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="12" rx="2" fill="{color}"/>')
        out.append(_text(x + 17, y + 1, name))
        x += 30 + CHAR_WIDTH * len(name)
    if note:
        out.append(_text(x + 10, y + 1, note, fill=AXIS))
    return out


def empty_chart(chart_id: str, message: str, height: int = 80) -> str:
    return "\n".join([*_open(chart_id, height, message),
                      f'<rect x="0.5" y="0.5" width="{WIDTH - 1}" height="{height - 1}" fill="#f9fafb" '
                      f'stroke="{GRID}" rx="6"/>',
                      _text(WIDTH / 2, height / 2 + 4, message, "middle", AXIS), "</svg>"])


def decade_label(exponent: float) -> str:
    """Tick label for 10**exponent: 1, 0.1, 0.01, then 1e-3 and smaller."""
    k = round(exponent)
    return {0: "1", -1: "0.1", -2: "0.01"}.get(k, f"1e{k}")


def dumbbell_chart(chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series],
                   x_range: tuple[float, float], x_ticks: Sequence[tuple[float, str]], x_label: str) -> str:
    """One row per label; each series draws a line from its `before` (hollow dot) to its `after` (filled dot)."""
    longest = max((len(_short(label)) for label in labels), default=0) * CHAR_WIDTH
    left, right, top, row = int(max(80, longest + 24)), 30, 40, 24
    height = top + row * len(labels) + 46
    x = _scale(*x_range, left, WIDTH - right)
    out = _open(chart_id, height, title)
    out += _legend([(s.name, s.color) for s in series], left, 18, "○ before → ● after")
    bottom = top + row * len(labels)
    for value, tick in x_ticks:
        out.append(f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{top}" y2="{bottom}" stroke="{GRID}"/>')
        out.append(_text(x(value), bottom + 16, tick, "middle", AXIS))
    out.append(_text((left + WIDTH - right) / 2, bottom + 36, x_label, "middle", AXIS))
    for i, label in enumerate(labels):
        y = top + row * i + row / 2
        if i % 2:
            out.append(f'<rect x="{left - 4}" y="{y - row / 2:.1f}" width="{WIDTH - right - left + 8}" '
                       f'height="{row}" fill="#f9fafb"/>')
        out.append(f"<g><title>{escape(label)}</title>{_text(left - 10, y + 4, _short(label), 'end')}</g>")
        for k, s in enumerate(series):
            dy = (k - (len(series) - 1) / 2) * 6
            after = s.after[i]
            before = s.before[i] if s.before is not None else None
            tip = f"{label} · {s.name}: " + (f"{_num(before)} → " if before is not None else "") + (
                _num(after) if after is not None else "n/a")
            out.append(f"<g><title>{escape(tip)}</title>")
            if before is not None and after is not None:
                out.append(f'<line x1="{x(before):.1f}" x2="{x(after):.1f}" y1="{y + dy:.1f}" y2="{y + dy:.1f}" '
                           f'stroke="{s.color}" stroke-width="2" opacity="0.55"/>')
            if before is not None:
                out.append(f'<circle cx="{x(before):.1f}" cy="{y + dy:.1f}" r="6.5" fill="white" '
                           f'stroke="{s.color}" stroke-width="1.8"/>')
            if after is not None:
                out.append(f'<circle cx="{x(after):.1f}" cy="{y + dy:.1f}" r="5" fill="{s.color}"/>')
            out.append("</g>")
    out.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{bottom}" y2="{bottom}" stroke="{AXIS}"/>')
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series],
              y_range: tuple[float, float], y_label: str) -> str:
    """Grouped vertical bars, one group per label, one bar per series (`after` values; None leaves a gap).
    Labels are slanted when they would not fit under their group."""
    right, top, plot_h = 20, 34, 200
    longest = max((len(_short(label)) for label in labels), default=0) * CHAR_WIDTH
    rotate_labels = longest > (WIDTH - 80) / max(len(labels), 1) * 0.9
    left = max(60, int(longest * 0.5)) if rotate_labels else 60  # slanted labels reach left by cos(60°)
    group = (WIDTH - left - right) / max(len(labels), 1)
    bottom_space = int(longest * 0.87) + 30 if rotate_labels else 44
    height = top + plot_h + bottom_space
    y = _scale(*y_range, top + plot_h, top)
    out = _open(chart_id, height, title)
    out += _legend([(s.name, s.color) for s in series], left, 18)
    for tick in nice_ticks(*y_range):
        out.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="{GRID}"/>')
        out.append(_text(left - 8, y(tick) + 4, f"{tick:g}", "end", AXIS))
    out.append(_text(16, top + plot_h / 2, y_label, "middle", AXIS,
                     f' transform="rotate(-90 16 {top + plot_h / 2:.1f})"'))
    bar = min(28.0, group * 0.8 / max(len(series), 1))
    for i, label in enumerate(labels):
        center = left + group * (i + 0.5)
        for k, s in enumerate(series):
            value = s.after[i]
            if value is None:
                continue
            bx = center + (k - len(series) / 2) * bar
            top_y, base_y = y(max(value, y_range[0])), y(y_range[0])
            tip = f"{label} · {s.name}: {_num(value)}"
            out.append(f'<rect x="{bx:.1f}" y="{top_y:.1f}" width="{bar * 0.92:.1f}" '
                       f'height="{max(base_y - top_y, 0.8):.1f}" fill="{s.color}" rx="1.5">'
                       f"<title>{escape(tip)}</title></rect>")
        ly = top + plot_h + 16
        if rotate_labels:
            out.append(_text(center, ly, _short(label), "end", AXIS, f' transform="rotate(-60 {center:.1f} {ly})"'))
        else:
            out.append(_text(center, ly, _short(label), "middle", AXIS))
    out.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{AXIS}"/>')
    out.append("</svg>")
    return "\n".join(out)


def log_bins(values: Sequence[float], floor: float = 1e-9, per_decade: int = 4,
             max_bins: int = 40) -> tuple[int, list[float], list[int]]:
    """(count at or below `floor`, log-spaced bin edges, counts per bin) of the values above `floor`."""
    positive = [v for v in values if v > floor]
    at_floor = len(values) - len(positive)
    if not positive:
        return at_floor, [], []
    lo, hi = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
    hi = max(hi, lo + 1)
    steps = min((hi - lo) * per_decade, max_bins)
    edges = [10 ** (lo + (hi - lo) * i / steps) for i in range(steps + 1)]
    counts = [0] * steps
    for v in positive:
        k = int((math.log10(v) - lo) / (hi - lo) * steps)
        counts[min(max(k, 0), steps - 1)] += 1
    return at_floor, edges, counts


def histogram_chart(chart_id: str, title: str, values: Sequence[float], x_label: str,
                    markers: Sequence[tuple[str, float]] = (), floor: float = 1e-9) -> str:
    """Histogram over log-spaced bins; values at or below `floor` get their own bar on the left."""
    if not values:
        return empty_chart(chart_id, "no values")
    at_floor, edges, counts = log_bins(values, floor)
    left, right, top, plot_h = 60, 20, 34, 220
    height = top + plot_h + 56
    zero_w = 70 if at_floor else 0
    y = _scale(0, max([at_floor, *counts]) * 1.08, top + plot_h, top)
    out = _open(chart_id, height, title)
    out += _legend([("positions", "#7c3aed")], left, 18, f"{len(values)} positions, log-spaced bins")
    for tick in nice_ticks(0, max([at_floor, *counts]) * 1.08):
        if tick != int(tick):
            continue
        out.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="{GRID}"/>')
        out.append(_text(left - 8, y(tick) + 4, f"{tick:g}", "end", AXIS))
    out.append(_text(16, top + plot_h / 2, "count", "middle", AXIS, f' transform="rotate(-90 16 {top + plot_h / 2})"'))
    base = top + plot_h
    if at_floor:
        out.append(f'<rect x="{left + 6}" y="{y(at_floor):.1f}" width="{zero_w - 16}" '
                   f'height="{base - y(at_floor):.1f}" fill="#a78bfa">'
                   f"<title>{at_floor} positions with KL ≤ {floor:g}</title></rect>")
        out.append(_text(left + zero_w / 2, base + 16, f"≤{floor:g}", "middle", AXIS))
    if edges:
        lo, hi = math.log10(edges[0]), math.log10(edges[-1])
        x = _scale(lo, hi, left + zero_w + 30, WIDTH - right - 10)
        for k, count in enumerate(counts):
            x0, x1 = x(math.log10(edges[k])), x(math.log10(edges[k + 1]))
            if count:
                out.append(f'<rect x="{x0 + 0.5:.1f}" y="{y(count):.1f}" width="{x1 - x0 - 1:.1f}" '
                           f'height="{base - y(count):.1f}" fill="#7c3aed"><title>{count} positions in '
                           f"[{edges[k]:.3g}, {edges[k + 1]:.3g})</title></rect>")
        for exponent in range(round(lo), round(hi) + 1):
            out.append(_text(x(exponent), base + 16, decade_label(exponent), "middle", AXIS))
        for name, value in markers:
            if value > floor:
                mx = x(min(max(math.log10(value), lo), hi))
                out.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{base}" stroke="#dc2626" '
                           f'stroke-dasharray="5 4" stroke-width="1.5"/>')
                out.append(_text(mx + 5, top + 12, f"{name} = {value:.3g}", fill="#dc2626"))
    out.append(_text((left + WIDTH - right) / 2, base + 40, x_label, "middle", AXIS))
    out.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{base}" y2="{base}" stroke="{AXIS}"/>')
    out.append("</svg>")
    return "\n".join(out)
