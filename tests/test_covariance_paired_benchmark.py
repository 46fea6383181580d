"""benchmarks/covariance_paired.py on a tiny model: each record edited in both arms from the same weights, the
weights handed back as they were, and the summary's paired ratio."""

import sys
from pathlib import Path

import torch
from test_memit import BASE, OBJECTIVE, REQUESTS
from tiny import tiny_model

from suture.editor import Editor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import covariance_paired  # noqa: E402


def test_both_arms_start_from_the_same_weights_and_leave_them_as_they_were():
    editor = Editor.from_model(*tiny_model("llama"))
    hparams = {"layers": [1, 2], "objective": OBJECTIVE, **BASE}
    editor.apply([REQUESTS[0]], method="memit", keep_failed=True, force=True, **{**hparams, "layers": [0]})
    before = {k: v.clone() for k, v in editor.model.state_dict().items()}
    rows = list(covariance_paired.paired_rows(editor, REQUESTS[1:], hparams, {"every": 1, "texts": 8},
                                              ["Some reference text.", "Another line of it."]))
    arms = covariance_paired.ARMS
    assert [(r["record"], r["arm"]) for r in rows] == [(i, arm) for i in range(2) for arm in arms]
    assert all(r["own_kl"] >= 0 and r["kl_from_base"] > 0 for r in rows)
    assert [r["covariance"] is None for r in rows] == [True, False, True, False]
    assert all(r["covariance"]["entries"] == 1 for r in rows if r["arm"] == "running_covariance")
    assert len(editor.ledger) == 1
    assert all(torch.equal(v, before[k]) for k, v in editor.model.state_dict().items())
    totals = covariance_paired.summary(rows)
    assert [t.get("arm") for t in totals] == [*covariance_paired.ARMS, None]
    ratio = sum(r["own_kl"] for r in rows[1::2]) / sum(r["own_kl"] for r in rows[::2])
    assert totals[-1]["paired_records"] == 2 and abs(totals[-1]["own_kl_ratio"] - ratio) < 1e-12
