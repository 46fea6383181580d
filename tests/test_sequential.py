"""Sequential sessions: ledger JSON round trip, exact revert(n) after many edits, the health monitor."""

import json
import warnings

import pytest
import torch
from tiny import tiny_model

from suture.editor import Editor, EditRequest
from suture.editor.ledger import replay_ledger
from suture.evaluation import EditingSession, HealthPolicy, HealthStopError, HealthWarning

HP = {"layer": 1, "corpus": {"n_samples": 40, "max_tokens": 32}, "templates": {"groups": [[5, 2]]},
      "objective": {"steps": 4}}
SUBJECTS = ["Italy", "France", "Spain", "Japan", "London", "Berlin"]


def requests(n):
    return [EditRequest(prompt="The capital of {} is", subject=SUBJECTS[i % len(SUBJECTS)],
                        target_new=["Paris", "Rome", "Tokyo"][i % 3], id=f"r{i}") for i in range(n)]


def test_revert_n_after_a_sequence_is_bit_exact():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    snapshots = [{k: v.clone() for k, v in model.state_dict().items()}]
    for i, request in enumerate(requests(6)):
        editor.apply([request], method="rome" if i % 2 else "memit", **(HP if i % 2 else {
            "layers": [1, 2], **{k: v for k, v in HP.items() if k != "layer"}}))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
    editor.revert(4)
    assert all(torch.equal(snapshots[2][k], v) for k, v in model.state_dict().items())
    editor.revert(2)
    assert all(torch.equal(snapshots[0][k], v) for k, v in model.state_dict().items())


def test_ledger_round_trips_through_json():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    for request in requests(3):
        editor.apply([request], method="rome", **HP)
    exported = json.loads(json.dumps(editor.ledger_json()))
    assert [e["requests"][0]["id"] for e in exported["edits"]] == ["r0", "r1", "r2"]
    assert all(e["method"] == "rome" and e["hparams"]["layer"] == 1 for e in exported["edits"])
    assert all(e["deltas"][0]["norm"] > 0 for e in exported["edits"])

    fresh_model, _ = tiny_model("llama")
    fresh = Editor.from_model(fresh_model, tok)
    replay_ledger(fresh, exported)
    assert fresh.ledger_json()["edits"][2]["requests"] == exported["edits"][2]["requests"]
    for key, value in model.state_dict().items():
        assert torch.allclose(value, fresh_model.state_dict()[key], atol=1e-6), key


def test_health_monitor_checks_every_k_edits_and_warns():
    model, tok = tiny_model("llama")
    session = EditingSession(Editor.from_model(model, tok), HealthPolicy(every=2, sample=2))
    session.apply(requests(1), **HP)
    assert session.monitor.history == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HealthWarning)
        session.apply(requests(2)[1:], **HP)
    check = session.monitor.history[0]
    assert check.edits == 2 and check.drift_kl >= 0 and 0 <= check.top1_agreement <= 1
    assert check.max_norm_growth > 0


def test_health_monitor_stops_when_told():
    model, tok = tiny_model("llama")
    policy = HealthPolicy(every=1, action="stop", thresholds={"max_drift_kl": 0.0})
    session = EditingSession(Editor.from_model(model, tok), policy)
    with pytest.raises(HealthStopError, match="max_drift_kl"):
        session.apply(requests(1), **HP)
    assert len(session.editor.ledger) == 1  # kept for inspection; revert() undoes it


def test_health_monitor_warns_with_a_typed_warning():
    model, tok = tiny_model("llama")
    session = EditingSession(Editor.from_model(model, tok), HealthPolicy(every=1, thresholds={"max_drift_kl": 0.0}))
    with pytest.warns(HealthWarning, match="max_drift_kl"):
        session.apply(requests(1), **HP)
