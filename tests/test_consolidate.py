"""Consolidation (editor/consolidate.py): the fact edits' summed update shrunk to the least scale the facts
still hold at, written as one ledger entry that reverts, saves and restores like an edit."""

import pytest
import torch
from test_memit import REQUESTS
from test_refresh import _editor_with
from tiny import tiny_model

from suture.editor import Editor, InvalidInputError, LedgerEntry, SutureError, WeightDelta
from suture.editor import consolidate as consolidate_module
from suture.editor.consolidate import summed_update
from suture.editor.ledger import replay_ledger


def _current_scale(editor, full: list[WeightDelta]) -> float:
    """How much of the full summed update is in the weights now (projected on it)."""
    delta = full[0]
    param = editor.model.get_submodule(delta.module).get_parameter(delta.param)
    now = param.detach().float() - editor.weights.base_value(delta.key).float()
    return float((now * delta.dense).sum() / (delta.dense * delta.dense).sum())


def _facts_lapse_below(monkeypatch, editor, thresholds: dict[str, float], calls: list):
    """Each fact (by subject) counts as lapsed while less than its threshold of the full update is in force."""
    full = summed_update(editor.ledger)

    def fake(_editor, requests, lapsed_when):
        scale = _current_scale(editor, full)
        calls.append((round(scale, 4), lapsed_when))
        return [scale < thresholds.get(r.subject, 0.0) - 1e-6 for r in requests]

    monkeypatch.setattr(consolidate_module, "lapsed_requests", fake)
    return full


def _weights(editor):
    return {k: v.clone() for k, v in editor.model.state_dict().items()}


def test_the_summed_update_shrinks_to_the_least_scale_the_facts_hold_at(monkeypatch, tmp_path):
    editor = _editor_with(REQUESTS)
    before = _weights(editor)
    calls = []
    full = _facts_lapse_below(monkeypatch, editor, {REQUESTS[2].subject: 0.9}, calls)
    report = editor.consolidate(max_lapsed=0.0, step=0.02)
    assert report.scale == pytest.approx(0.9) and report.facts == 3
    assert (report.lapsed_before, report.lapsed_after) == (0, 0)
    assert [s for s, _ in report.tried] == pytest.approx([1.0, 0.98, 0.96, 0.94, 0.92, 0.9, 0.88])
    assert report.tried[-1][1] == 1 and all(found == 0 for _, found in report.tried[:-1])
    assert all(when == "old_preferred" for _, when in calls)
    assert len(editor.ledger) == 4 and editor.ledger[-1].method == "consolidate" and not editor.ledger[-1].requests
    assert _current_scale(editor, full) == pytest.approx(0.9, abs=1e-5)
    for delta in full:  # every touched parameter is W0 + 0.9 (W - W0)
        base = editor.weights.base_value(delta.key)
        expected = base + 0.9 * (before[delta.key] - base)
        assert torch.allclose(editor.model.get_parameter(delta.key), expected, atol=1e-5)

    path = editor.save_session(tmp_path / "s.pt")
    consolidated = _weights(editor)
    editor.reset()
    editor.restore_session(path)
    assert all(torch.equal(v, consolidated[k]) for k, v in editor.model.state_dict().items())
    editor.revert()
    assert all(torch.equal(v, before[k]) for k, v in editor.model.state_dict().items())


def test_a_share_of_lapses_is_allowed_and_the_floor_holds(monkeypatch):
    editor = _editor_with(REQUESTS)
    _facts_lapse_below(monkeypatch, editor, {REQUESTS[2].subject: 0.9}, [])
    report = editor.consolidate(max_lapsed=0.34, step=0.1, min_scale=0.6)
    assert report.scale == pytest.approx(0.6) and report.lapsed_after == 1


def test_a_second_consolidation_scales_what_is_in_force(monkeypatch):
    editor = _editor_with(REQUESTS)
    full = summed_update(editor.ledger)
    _facts_lapse_below(monkeypatch, editor, {}, [])
    editor.consolidate(max_lapsed=0.0, step=0.1, min_scale=0.8)
    after = summed_update(editor.ledger)
    assert all(torch.allclose(a.dense, 0.8 * f.dense, atol=1e-6) for a, f in zip(after, full, strict=True))
    editor.consolidate(max_lapsed=0.0, step=0.5, min_scale=0.5)
    assert _current_scale(editor, full) == pytest.approx(0.4, abs=1e-5)


def test_nothing_is_written_when_no_smaller_scale_holds(monkeypatch):
    editor = _editor_with(REQUESTS)
    before = _weights(editor)
    _facts_lapse_below(monkeypatch, editor, {REQUESTS[0].subject: 0.99}, [])
    report = editor.consolidate(max_lapsed=0.0)
    assert report.scale == 1.0 and report.entry is None and len(editor.ledger) == 3
    assert all(torch.equal(v, before[k]) for k, v in editor.model.state_dict().items())


def test_entries_without_requests_are_left_as_they_are(monkeypatch):
    editor = _editor_with(REQUESTS[:1])
    edited = editor.ledger[0].deltas
    other = "model.layers.0.self_attn.o_proj"
    width = editor.model.get_submodule(other).weight.shape
    steer = WeightDelta(other, dense=torch.full(width, 0.01))
    editor.ledger.append(LedgerEntry(method="head-steer", hparams={}, requests=[], deltas=[steer], seconds=0.0))
    editor._rebuild()
    steered = editor.model.get_submodule(other).weight.detach().clone()
    _facts_lapse_below(monkeypatch, editor, {}, [])
    report = editor.consolidate(max_lapsed=0.0, step=0.5, min_scale=0.5)
    assert report.scale == 0.5
    assert torch.equal(editor.model.get_submodule(other).weight, steered)
    assert sorted(d.key for d in editor.ledger[-1].deltas) == sorted(d.key for d in edited)


@pytest.mark.parametrize(("field", "value"), [("max_lapsed", -0.1), ("max_lapsed", 1.5), ("step", 0.0),
                                              ("step", 0.0005), ("step", 0.6), ("min_scale", 1.0), ("min_scale", -0.1),
                                              ("lapsed_when", "sometimes")])
def test_settings_out_of_range_are_refused_with_the_field_named(field, value):
    editor = _editor_with(REQUESTS[:1])
    with pytest.raises(InvalidInputError, match=field):
        editor.consolidate(**{field: value})
    assert len(editor.ledger) == 1


def test_a_ledger_export_replays_the_consolidation_at_its_recorded_scale(monkeypatch):
    editor = _editor_with(REQUESTS[:2])
    _facts_lapse_below(monkeypatch, editor, {}, [])
    editor.consolidate(max_lapsed=0.0, step=0.25, min_scale=0.5)
    exported = editor.ledger_json()
    assert exported["edits"][-1]["method"] == "consolidate" and exported["edits"][-1]["hparams"]["scale"] == 0.5
    again = Editor.from_model(*tiny_model("llama"))
    results = replay_ledger(again, exported)
    assert [r.method for r in results] == ["memit", "memit", "consolidate"]
    assert again.ledger[-1].details["scale"] == 0.5
    mine, theirs = editor.model.state_dict(), again.model.state_dict()
    assert all(torch.allclose(v, theirs[k], atol=1e-6) for k, v in mine.items())
    broken = {**exported, "edits": [*exported["edits"][:2], {**exported["edits"][2], "hparams": {"scale": "half"}}]}
    with pytest.raises(SutureError, match="edit 2: a consolidation needs its scale"):
        replay_ledger(Editor.from_model(*tiny_model("llama")), broken)
