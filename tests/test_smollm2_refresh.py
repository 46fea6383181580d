"""Refresh on SmolLM2 (slow): an edit that was undone is found and written back, its own key released."""

import pytest
from test_smollm2 import EDITS

pytestmark = pytest.mark.slow

# The best sequential variant's single-edit settings (benchmarks/sequential.py, memit+ngd+preserve+until).
SEQUENTIAL = {"preserve_earlier": 1.0, "rounds": 2, "rounds_until_written": True,
              "objective": {"optimizer": "normalized_gradient", "lr": 0.25, "steps": 40, "early_stop_nll": 0.6}}


def _says(editor, request) -> bool:
    return editor.generate([request.text], max_new_tokens=4)[0].strip().startswith(request.target_new)


def test_an_undone_edit_is_written_back_and_the_others_are_left_alone(real_editor):
    first, second = EDITS[:2]
    real_editor.apply([first], method="memit", **SEQUENTIAL)
    real_editor.apply([second], method="memit", **SEQUENTIAL)
    try:
        undone = real_editor.ledger[0]
        # as if later edits had undone it: its deltas taken back out of the weights (not through the ledger)
        real_editor.weights.apply([d.scaled(-1.0) for d in undone.deltas])
        assert not _says(real_editor, first) and _says(real_editor, second)
        report = real_editor.refresh(8)
        assert report.checked == [first.label, second.label]
        assert report.lapsed == [first.label] and not report.failed, report
        assert len(report.rewritten) == 1 and report.rewritten[0].status == "succeeded"
        assert real_editor.ledger[-1].details["refreshes"] == {"entry": undone.id, "request": 0}
        assert _says(real_editor, first) and _says(real_editor, second)
        assert not real_editor.refresh(8).lapsed  # both hold now: nothing more to write
    finally:
        real_editor.reset()
