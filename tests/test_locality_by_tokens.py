"""benchmarks/locality_by_tokens.py: where along a neighbor answer the edited model departs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from locality_by_tokens import neighbor_pairs, prefix_agreement  # noqa: E402


def test_prefix_agreement_counts_pairs_equal_up_to_k_tokens():
    pairs = [("a b c d", "a b c d"), ("a b c d", "a b x d"), ("a b", "z b")]
    shares = prefix_agreement(pairs, str.split, lengths=(1, 2, 3, 8))
    assert shares == {1: 2 / 3, 2: 2 / 3, 3: 1 / 3, 8: 1 / 3}


def test_only_neighbor_answers_with_a_base_are_read():
    rows = [{"answers": [{"judged": "new", "text": "x", "base": None},
                         {"judged": "changed", "text": "b", "base": "a"},
                         {"judged": "same", "text": "a", "base": "a"}]}]
    assert neighbor_pairs(rows) == [("a", "b"), ("a", "a")]
