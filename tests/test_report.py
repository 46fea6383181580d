"""The HTML report: JSON round trip, self-containment, escaping, and a real render in headless Chromium."""

import os
import re

import pytest
from tiny import tiny_model

from suture.editor import Editor, EditRequest
from suture.evaluation import EvaluationOptions, EvaluationReport, evaluate
from suture.evaluation.html_report import render_html, write_report
from suture.evaluation.screenshot import find_chromium, screenshot

HP = {"layer": 1, "corpus": {"n_samples": 40, "max_tokens": 32}, "templates": {"groups": [[5, 2]]},
      "objective": {"steps": 6}}
HOSTILE = "<script>alert('x')</script>"
REQUESTS = [
    EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London", target_true="Rome",
                paraphrases=["Italy has its capital in"], neighbors=["The capital of France is"], id="capital"),
    EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="<script>",
                target_true="French", neighbors=["The mother tongue of Toko Yasuda is"], id=HOSTILE),
]
PLOTS = ("plot-probabilities", "plot-neighborhood", "plot-drift")


@pytest.fixture
def report() -> EvaluationReport:
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    editor.apply(REQUESTS, method="rome", **HP)
    return evaluate(editor, options=EvaluationOptions(fluency=True, fluency_prompts=2))


@pytest.fixture
def chromium() -> str:
    path = find_chromium()
    if path is None:
        message = "chromium not found: the report render test needs it (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)
    return path


def test_json_round_trips_and_html_is_written(report, tmp_path):
    json_path, html_path = write_report(report, tmp_path / "out")
    assert (json_path.name, html_path.name) == ("report.json", "report.html")
    assert EvaluationReport.model_validate_json(json_path.read_text()) == report
    assert html_path.read_text() == render_html(report)


def test_html_has_three_plots_and_loads_nothing_external(report):
    page = render_html(report)
    for plot in PLOTS:
        assert len(re.findall(rf'<svg class="plot" id="{plot}"', page)) == 1
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"<link\b|@import|url\(", page, re.IGNORECASE)
    assert "Content-Security-Policy" in page


def test_user_text_is_escaped(report):
    page = render_html(report, title="<b>my</b> edits")
    assert HOSTILE not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<b>my</b>" not in page and "&lt;b&gt;my&lt;/b&gt; edits" in page
    assert page.count("<script") == 1  # only the page's own marker script


def test_report_renders_in_headless_chromium(report, chromium, tmp_path):
    _, html_path = write_report(report, tmp_path)
    result = screenshot(html_path, tmp_path / "report.png")
    assert result.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.png.stat().st_size > 5_000
    assert result.rendered, result.dom[:500]
    body = re.search(r"<body[^>]*>", result.dom).group(0)
    assert 'data-plot-count="3"' in body and 'data-errors="0"' in body, body
    assert result.console_errors == [], result.console_errors


def test_console_errors_are_caught(chromium, tmp_path):
    """The render check is not vacuous: a broken page yields console errors and no rendered marker."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" "
                    "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body>"
                    "<img src=\"https://example.com/x.png\"><script>notDefined();</script></body></html>")
    result = screenshot(page, tmp_path / "broken.png")
    assert not result.rendered
    assert any("Uncaught ReferenceError" in e for e in result.console_errors)
    assert any("Content Security Policy" in e for e in result.console_errors)
