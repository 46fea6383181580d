"""benchmarks/paired_edits.py on a tiny model: each record edited once per arm from the same weights, the
weights handed back as they were, the facts' lapses counted, and the summary's paired ratio."""

import argparse
import sys
from pathlib import Path

import pytest
import torch
from test_memit import BASE, OBJECTIVE, REQUESTS
from tiny import tiny_model

from suture.editor import Editor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paired_edits  # noqa: E402

ARMS = {"base_covariance": {"running_covariance": None},
        "running_covariance": {"running_covariance": {"every": 1, "texts": 8}}}


def test_every_arm_starts_from_the_same_weights_and_leaves_them_as_they_were():
    editor = Editor.from_model(*tiny_model("llama"))
    hparams = {"layers": [1, 2], "objective": OBJECTIVE, **BASE}
    editor.apply([REQUESTS[0]], method="memit", keep_failed=True, force=True, **{**hparams, "layers": [0]})
    before = {k: v.clone() for k, v in editor.model.state_dict().items()}
    rows = list(paired_edits.paired_rows(editor, REQUESTS[1:], hparams, ARMS,
                                         ["Some reference text.", "Another line of it."],
                                         details=("write_scale", "running_covariance"), held=True))
    assert [(r["record"], r["arm"]) for r in rows] == [(i, arm) for i in range(2) for arm in ARMS]
    assert all(r["own_kl"] >= 0 and r["kl_from_base"] > 0 for r in rows)
    assert [r["running_covariance"] is None for r in rows] == [True, False, True, False]
    assert all(r["running_covariance"]["entries"] == 1 for r in rows if r["arm"] == "running_covariance")
    assert all(r["facts"] <= 1 and 0 <= r["lapsed_after"] <= r["facts"] for r in rows)
    assert len(editor.ledger) == 1
    assert all(torch.equal(v, before[k]) for k, v in editor.model.state_dict().items())
    totals = paired_edits.summary(rows)
    assert [t["arm"] for t in totals] == list(ARMS)
    ratio = sum(r["own_kl"] for r in rows[1::2]) / sum(r["own_kl"] for r in rows[::2])
    assert "own_kl_ratio" not in totals[0]
    assert totals[1]["paired_records"] == 2 and abs(totals[1]["own_kl_ratio"] - ratio) < 1e-12
    assert totals[1]["higher"] == sum(b["own_kl"] > a["own_kl"] for a, b in zip(rows[::2], rows[1::2]))


@pytest.mark.parametrize("text", ["noequals", "=", "x=[1]", "x=not json"])
def test_an_arm_is_a_name_and_a_json_object(text):
    with pytest.raises(argparse.ArgumentTypeError):
        paired_edits._arm(text)
    assert paired_edits._arm(' wide ={"layers": [1]}') == ("wide", {"layers": [1]})
