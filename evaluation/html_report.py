"""A self-contained HTML page for an `EvaluationReport`: summary table and inline SVG plots, no network.

`write_report(report, directory)` writes `report.json` and `report.html`; `screenshot` renders the page in
headless Chromium (see `evaluation.screenshot`).
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from suture.evaluation.report import EvaluationReport
from suture.evaluation.report_style import STYLE
from suture.evaluation.screenshot import RenderResult, screenshot
from suture.evaluation.svg_charts import (
    Series,
    bar_chart,
    decade_label,
    dumbbell_chart,
    empty_chart,
    histogram_chart,
)

__all__ = ["RenderResult", "render_html", "screenshot", "write_report"]

MAX_CASES = 60  # rows in the per-case plots; the caption says when more exist
NEW, TRUE, BEFORE, AFTER = "#2563eb", "#ea580c", "#9ca3af", "#0d9488"
_SCRIPT = """
(function () {
  var errors = 0;
  window.addEventListener("error", function () { errors += 1; }, true);
  document.addEventListener("securitypolicyviolation", function () { errors += 1; });
  window.addEventListener("load", function () {
    var body = document.body;
    body.dataset.svgCount = String(document.querySelectorAll("svg").length);
    body.dataset.plotCount = String(document.querySelectorAll("svg.plot").length);
    body.dataset.errors = String(errors);
    body.dataset.rendered = "yes";
  });
})();
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _change(before: float | None, after: float | None, higher_is_better: bool, spec: str = "+.3f",
            relative: bool = False) -> str:
    if before is None or after is None or (relative and before == 0):
        return "<td></td>"
    delta = after / before - 1 if relative else after - before
    good = delta >= 0 if higher_is_better else delta <= 0
    tone = "" if abs(delta) < 1e-12 else (' class="good"' if good else ' class="bad"')
    return f"<td{tone}>{format(delta, spec)}</td>"


def _row(name: str, before: str, after: str, change: str = "<td></td>", hint: str = "") -> str:
    hint_html = f'<span class="hint">{escape(hint)}</span>' if hint else ""
    return f"<tr><th>{escape(name)}{hint_html}</th><td>{before}</td><td>{after}</td>{change}</tr>"


def summary_table(report: EvaluationReport) -> str:
    pre, post = report.pre, report.post
    rows = [
        _row("Efficacy", _fmt(pre.efficacy), _fmt(post.efficacy), _change(pre.efficacy, post.efficacy, True),
             "P(new) > P(true) on the rewrite prompt"),
        _row("Paraphrase", _fmt(pre.paraphrase), _fmt(post.paraphrase),
             _change(pre.paraphrase, post.paraphrase, True), "the same on paraphrases"),
        _row("Neighborhood", _fmt(pre.neighborhood), _fmt(post.neighborhood),
             _change(pre.neighborhood, post.neighborhood, True), "P(true) > P(new) on neighbors"),
        _row("Neighborhood drop", "", _fmt(report.neighborhood_drop)),
    ]
    if report.drift is not None:
        d = report.drift
        rows += [
            _row("Drift: mean KL", "", _fmt(d.mean_kl, ".4g"), hint="KL(base ‖ edited) on reference text"),
            _row("Drift: top-1 agreement", "", _fmt(d.top1_agreement)),
            _row("Perplexity", _fmt(d.perplexity_base, ".3f"), _fmt(d.perplexity_edited, ".3f"),
                 _change(d.perplexity_base, d.perplexity_edited, False, "+.2%", relative=True)),
        ]
    else:
        rows.append(_row("Drift", "", "not measured"))
    if report.fluency is not None:
        f = report.fluency
        rows.append(_row("Fluency", _fmt(f.base), _fmt(f.edited), _change(f.base, f.edited, True),
                         "n-gram entropy of generations"))
    if report.token_accuracy is not None:
        t = report.token_accuracy
        rows.append(_row("Token accuracy", "", " / ".join(_fmt(v) for v in (t.rewrite, t.paraphrase, t.neighborhood)),
                         hint="rewrite / paraphrase / neighbor agreement"))
    growth = f"{report.max_norm_growth:+.2%}" if report.norm_growth else "—"
    rows.append(_row("Max norm growth", "", growth, hint="of any edited weight"))
    head = "<tr><th>Metric</th><th>Before (base)</th><th>After (edited)</th><th>Change</th></tr>"
    return f'<table class="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _labels(report: EvaluationReport) -> list[str]:
    return [c.id if c.id is not None else f"case {i + 1}" for i, c in enumerate(report.cases_post)]


def _log10_p(logp: float) -> float | None:
    return logp / math.log(10) if math.isfinite(logp) else None


def probability_chart(report: EvaluationReport) -> str:
    pre, post = report.cases_pre[:MAX_CASES], report.cases_post[:MAX_CASES]
    new_before, new_after = [_log10_p(c.logp_new) for c in pre], [_log10_p(c.logp_new) for c in post]
    true_before, true_after = [_log10_p(c.logp_true) for c in pre], [_log10_p(c.logp_true) for c in post]
    values = [v for v in new_before + new_after + true_before + true_after if v is not None]
    if not values:
        return empty_chart("plot-probabilities", "no finite target probabilities")
    lo, hi = math.floor(min(values)), min(math.ceil(max(values)), 0)
    lo = min(lo, hi - 1)
    step = max(1, math.ceil((hi - lo) / 12))
    ticks = [(k, decade_label(k)) for k in range(hi, lo - 1, -step)]
    return dumbbell_chart(
        "plot-probabilities", "Target probabilities per case, before and after the edit",
        _labels(report)[:MAX_CASES],
        [Series("P(target_new)", NEW, new_after, new_before), Series("P(target_true)", TRUE, true_after, true_before)],
        (lo, hi), ticks, "probability of the whole target on the rewrite prompt (log scale)")


def neighborhood_chart(report: EvaluationReport) -> str:
    rows = [(label, pre.neighborhood, post.neighborhood)
            for label, pre, post in zip(_labels(report), report.cases_pre, report.cases_post)
            if pre.neighborhood is not None or post.neighborhood is not None][:MAX_CASES]
    if not rows:
        return empty_chart("plot-neighborhood", "no neighbor prompts in these cases")
    labels, before, after = zip(*rows)
    return bar_chart("plot-neighborhood", "Neighborhood score per case, before and after", labels,
                     [Series("before", BEFORE, before), Series("after", AFTER, after)], (0.0, 1.0),
                     "neighborhood score")


def drift_chart(report: EvaluationReport) -> str:
    if report.drift is None or not report.drift.kl_per_position:
        return empty_chart("plot-drift", "drift not measured")
    return histogram_chart("plot-drift", "KL(base ‖ edited) per reference-text position",
                           report.drift.kl_per_position, "KL(base ‖ edited) per position (log scale)",
                           markers=[("mean", report.drift.mean_kl)])


def _figure(heading: str, caption: str, svg: str) -> str:
    return (f"<section class=\"figure\"><h2>{escape(heading)}</h2><p class=\"caption\">{escape(caption)}</p>"
            f"{svg}</section>")


def norm_table(report: EvaluationReport) -> str:
    if not report.norm_growth:
        return ""
    rows = "".join(f"<tr><td><code>{escape(n.module)}</code></td><td>{n.base_norm:.4g}</td>"
                   f"<td>{n.edited_norm:.4g}</td><td>{n.growth:+.2%}</td></tr>" for n in report.norm_growth)
    head = "<tr><th>Edited weight</th><th>Base norm</th><th>Edited norm</th><th>Growth</th></tr>"
    return f"<section><h2>Weight norms</h2><table><thead>{head}</thead><tbody>{rows}</tbody></table></section>"


def generated_section(report: EvaluationReport) -> str:
    """What the edited model generates, judged (evaluation/generated.py): a table apart from the
    teacher-forced summary, and the first answers with their verdicts."""
    gen = report.generated
    if gen is None:
        return '<section><h2>Generated answers</h2><p class="meta">not measured</p></section>'
    rows = [
        _row("Efficacy (generated)", "", _fmt(gen.efficacy), hint="rewrite answer names the new target first"),
        _row("Paraphrase (generated)", "", _fmt(gen.paraphrase), hint="the same on paraphrases"),
        _row("Chat form (generated)", "", _fmt(gen.chat), hint="the fact asked through the chat template"),
        _row("Generation prompts", "", _fmt(gen.generation_prompts), hint="free text about the subject names it"),
        _row("Locality (generated)", "", _fmt(gen.locality), hint="neighbor answers equal the base model's"),
        _row("Portability (generated)", "", _fmt(gen.portability), hint="one-hop questions"),
        _row("Subject kept (generated)", "", _fmt(gen.subject_kept),
             hint="longer answers restate the subject as the base model's do"),
    ]
    if gen.fluency is not None:
        f = gen.fluency
        rows.append(_row("Fluency (entropy)", _fmt(f.base_entropy), _fmt(f.edited_entropy),
                         _change(f.base_entropy, f.edited_entropy, True), "bi/tri-gram entropy of generations"))
        rows.append(_row("Repetition", _fmt(f.base_repetition), _fmt(f.edited_repetition),
                         _change(f.base_repetition, f.edited_repetition, False), "share of repeated trigrams"))
        if f.chat_base_entropy is not None:
            rows.append(_row("Chat fluency (entropy)", _fmt(f.chat_base_entropy), _fmt(f.chat_edited_entropy),
                             _change(f.chat_base_entropy, f.chat_edited_entropy, True)))
    head = "<tr><th>Metric</th><th>Base</th><th>Edited</th><th>Change</th></tr>"
    samples = []
    for case in gen.cases[:MAX_CASES]:
        for answer in case.answers[:4]:
            samples.append(f"<li><b>{escape(answer.judged)}</b> · {escape(answer.prompt[-120:])}"
                           f" → <i>{escape(answer.text)}</i></li>")
    return (f'<section><h2>Generated answers (greedy, judged; apart from the teacher-forced scores)</h2>'
            f'<p class="meta">{gen.generations} generations in {gen.seconds:.1f} s '
            f'({gen.seconds_per_case:.2f} s per case)</p>'
            f'<table class="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
            f'<ol class="samples">{"".join(samples[:40])}</ol></section>')


def fluency_samples(report: EvaluationReport) -> str:
    if report.fluency is None or not report.fluency.samples:
        return ""
    items = "".join(f"<li>{escape(s)}</li>" for s in report.fluency.samples)
    return f'<section><h2>Generations of the edited model</h2><ol class="samples">{items}</ol></section>'


def render_html(report: EvaluationReport, title: str = "suture evaluation") -> str:
    shown = min(report.n_cases, MAX_CASES)
    more = f" (first {shown} of {report.n_cases} shown)" if report.n_cases > shown else ""
    figures = [
        _figure("Target probabilities", "Hollow dots: base model; filled dots: edited model. The edit succeeds on "
                f"a case when the blue dot ends right of the orange one{more}.", probability_chart(report)),
        _figure("Neighborhood", "Share of neighbor prompts on which the true answer still beats the new one, "
                f"per case{more}.", neighborhood_chart(report)),
        _figure("Drift", "How far the edited model's next-token distributions moved from the base model's, "
                "over all positions of the reference text.", drift_chart(report)),
    ]
    cases = f"{report.n_cases} case{'s' if report.n_cases != 1 else ''}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<script>{_SCRIPT}</script>
<style>{STYLE}</style>
</head>
<body>
<main>
<header><h1>{escape(title)}</h1><p class="meta">{cases} · evaluated in {report.seconds:.1f} s</p></header>
<section><h2>Summary (teacher-forced scores, drift, norms)</h2>{summary_table(report)}</section>
{generated_section(report)}
{"".join(figures)}
{norm_table(report)}
{fluency_samples(report)}
<footer>Generated by suture. This page is self-contained: no network requests, no external files.</footer>
</main>
</body>
</html>
"""


def write_report(report: EvaluationReport, directory: str | Path,
                 title: str = "suture evaluation") -> tuple[Path, Path]:
    """Write `report.json` and `report.html` into `directory` (created if needed); return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    html_path.write_text(render_html(report, title), encoding="utf-8")
    return json_path, html_path
