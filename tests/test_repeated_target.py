"""benchmarks/repeated_target.py: rewrite and paraphrase answers that say the target again and again."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from repeated_target import stutter_counts  # noqa: E402


def test_only_rewrite_and_paraphrase_answers_are_counted():
    records = {"7": {"requested_rewrite": {"target_new": {"str": "midfielder"}}, "paraphrase_prompts": ["p"]}}
    rows = [{"case": "7", "answers": [{"text": " midfielder midfielder midfielder"},
                                      {"text": " of midfielder, who scored"},
                                      {"text": " midfielder midfielder"}]}]  # a neighbor answer: not counted
    counts = stutter_counts(rows, records)
    assert (counts["answers"], counts["stuttering"], counts["cases_stuttering"]) == (2, 1, 1)
