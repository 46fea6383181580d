"""One job run on a loaded tiny model, without Ray or HTTP: edit, repair, evaluate (replaying another job's
ledger), a failing gate, bad input found while running, cancellation, and the loaded-model cache."""

from __future__ import annotations

import json

import pytest
import torch
from service_helpers import edit_body, save_tiny_model

from suture.service.jobs import JobCancelled, JobFailed, LoadedModels, ModelCatalog, RunContext, run_job
from suture.service.schemas import JobCreate


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    directory = save_tiny_model(tmp_path_factory.mktemp("tiny"))
    return LoadedModels(ModelCatalog({"tiny": str(directory)}), capacity=1)


def context(tmp_path, body: dict, job_id: str = "job1", **kwargs) -> RunContext:
    return RunContext(job_id=job_id, spec=JobCreate.model_validate(body), artifacts_dir=tmp_path, **kwargs)


def test_edit_job_writes_its_outputs_and_hands_back_a_clean_model(models, tmp_path):
    stages = []
    ctx = context(tmp_path, edit_body(2, output_name="fix", save_checkpoint=True),
                  report=lambda fraction, stage: stages.append((fraction, stage)))
    with models.checkout("tiny") as editor:
        base = {k: v.clone() for k, v in editor.model.state_dict().items()}
        result = run_job(editor, ctx)
    assert {"ledger.json", "job.json", "checkpoint/model.safetensors", "adapter/adapter_config.json"} <= set(
        result["files"])
    assert json.loads((tmp_path / "fix" / "ledger.json").read_text())["edits"][0]["method"] == "rome"
    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions) and any("request 2/2" in s for _, s in stages)
    with models.checkout("tiny") as editor:  # reverted to the base weights, bit for bit
        assert not editor.ledger
        assert all(torch.equal(v, base[k]) for k, v in editor.model.state_dict().items())


def test_repair_job_applies_a_head_method(models, tmp_path):
    body = {"kind": "repair", "model": "tiny", "method": "head-scale",
            "hparams": {"layer": 1, "heads": [0, 2], "factor": 0.0}}
    with models.checkout("tiny") as editor:
        result = run_job(editor, context(tmp_path, body, job_id="rep"))
    assert result["edits"][0]["method"] == "head-scale" and "ledger.json" in result["files"]


def test_evaluate_job_replays_an_earlier_jobs_edits(models, tmp_path):
    with models.checkout("tiny") as editor:
        run_job(editor, context(tmp_path, edit_body(1, output_name="first")))
    body = {"kind": "evaluate", "model": "tiny", "ledger_from": "first",
            "evaluation": {"drift": True, "token_accuracy": False}}
    with models.checkout("tiny") as editor:
        result = run_job(editor, context(tmp_path, body, job_id="ev"))
    assert result["report"]["n_cases"] == 1 and "drift" in result["report"]
    assert {"report.json", "report.html"} <= set(result["files"])


def test_a_failing_gate_fails_the_job_and_writes_nothing(models, tmp_path):
    body = edit_body(1, output_name="gated", gate={"min_efficacy": 1.0, "max_drift_kl": 0.0})
    with models.checkout("tiny") as editor, pytest.raises(JobFailed, match="gate failed: .*max_drift_kl") as info:
        run_job(editor, context(tmp_path, body, job_id="g"))
    assert info.value.result["gate"]["passed"] is False
    assert not (tmp_path / "gated").exists()


def test_a_head_method_in_an_edit_job_is_refused(models, tmp_path):
    body = {**edit_body(1), "method": "head-scale"}
    with models.checkout("tiny") as editor, pytest.raises(JobFailed, match="submit it as a 'repair' job"):
        run_job(editor, context(tmp_path, body, job_id="bad"))


def test_cancellation_at_a_progress_report_leaves_no_outputs_and_a_clean_model(models, tmp_path):
    def report(fraction, stage):
        if "request 2" in stage:
            raise JobCancelled("job")

    with models.checkout("tiny") as editor:
        base = {k: v.clone() for k, v in editor.model.state_dict().items()}
        with pytest.raises(JobCancelled):
            run_job(editor, context(tmp_path, edit_body(3, output_name="cancelled"), job_id="c", report=report))
    assert not (tmp_path / "cancelled").exists()
    with models.checkout("tiny") as editor:
        assert all(torch.equal(v, base[k]) for k, v in editor.model.state_dict().items())


def test_datasets_resolve_inside_the_data_directory_only(models, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "secrets.json").write_text("{}")  # exists, but outside: refused like a missing file
    body = {**edit_body(1), "requests": None, "dataset": {"path": "../secrets.json", "format": "jsonl"}}
    with models.checkout("tiny") as editor, pytest.raises(JobFailed, match="is not a readable file .* in the "
                                                                           "server's data directories"):
        run_job(editor, context(tmp_path, body, job_id="d", data_dir=tmp_path / "data"))


def test_unknown_models_name_the_valid_ones(models):
    with pytest.raises(Exception, match="valid models: .*tiny"):
        models.catalog.ref("nope")


def test_an_edit_job_continues_from_an_earlier_output_with_its_deltas_as_written(models, tmp_path):
    """Lifelong editing through the service: each job restores the earlier output's session (deltas and
    all, not recomputed), adds its edit, and writes a session that carries every edit so far."""
    first_body, second_body = edit_body(1, output_name="first"), edit_body(2, output_name="second")
    second_body["requests"] = second_body["requests"][1:]  # another request than the first job's
    with models.checkout("tiny") as editor:
        base = {k: v.clone() for k, v in editor.model.state_dict().items()}
        run_job(editor, context(tmp_path, first_body))
        first_weights = {k: v.clone() for k, v in editor.model.state_dict().items()}
    assert (tmp_path / "first" / "session.pt").is_file()
    with models.checkout("tiny") as editor:
        editor.restore_session(tmp_path / "first" / "session.pt")  # the session holds exactly what was written
        assert all(torch.equal(v, first_weights[k]) for k, v in editor.model.state_dict().items())
    with models.checkout("tiny") as editor:
        result = run_job(editor, context(tmp_path, {**second_body, "continue_from": "first"}, job_id="job2"))
    assert result["continued"] == {"from": "first", "edits": 1, "how": "restored"}
    assert "session.pt" in result["files"] and len(result["edits"]) == 2
    ledger = json.loads((tmp_path / "second" / "ledger.json").read_text())["edits"]
    assert [e["requests"][0]["subject"] for e in ledger] == ["Danielle Darrieux", "France"]
    with models.checkout("tiny") as editor:  # the pool's model is handed back clean
        assert not editor.ledger
        assert all(torch.equal(v, base[k]) for k, v in editor.model.state_dict().items())


def test_an_output_without_a_session_is_continued_by_replaying_its_ledger(models, tmp_path):
    with models.checkout("tiny") as editor:
        run_job(editor, context(tmp_path, edit_body(1, output_name="old")))
    (tmp_path / "old" / "session.pt").unlink()  # as outputs written before sessions were kept
    with models.checkout("tiny") as editor:
        result = run_job(editor, context(tmp_path, {**edit_body(2, output_name="new"), "continue_from": "old"},
                                         job_id="job2"))
    assert result["continued"]["how"] == "replayed" and [e["requests"] for e in result["edits"]] == [1, 2]


def test_continue_from_a_missing_output_or_another_models_session_fails_naming_the_field(models, tmp_path):
    from suture.editor.session import write_session

    with models.checkout("tiny") as editor, pytest.raises(JobFailed, match="continue_from: no output 'gone'"):
        run_job(editor, context(tmp_path, {**edit_body(1), "continue_from": "gone"}))
    write_session([], "0" * 64, tmp_path / "other" / "session.pt")
    with models.checkout("tiny") as editor, pytest.raises(JobFailed, match="continue_from: session 'other'/session.pt: "
                                                                           "saved on base model 0000") as info:
        run_job(editor, context(tmp_path, {**edit_body(1), "continue_from": "other"}))
    assert str(tmp_path) not in str(info.value)  # the server's paths stay on the server
    assert not (tmp_path / "job1").exists()


def test_continue_from_a_session_that_grew_past_the_cap_fails_when_it_runs(models, tmp_path):
    from suture.service.settings import JobLimits

    with models.checkout("tiny") as editor:
        run_job(editor, context(tmp_path, edit_body(1, output_name="first")))
    body = {**edit_body(2, output_name="second"), "continue_from": "first"}
    expected = "continue_from: 'first' holds 1 ledger entries; this server continues sessions of at most 0"
    with models.checkout("tiny") as editor, pytest.raises(JobFailed, match=expected):
        run_job(editor, context(tmp_path, body, job_id="job2", limits=JobLimits(max_session_edits=1)))
    assert not (tmp_path / "second").exists()


def test_refresh_runs_after_the_edit_with_the_jobs_window_and_criterion(models, tmp_path, monkeypatch):
    from suture.editor import Editor
    from suture.editor.refresh import RefreshReport

    calls = []

    def fake_refresh(self, window, keep_failed=False, lapsed_when="not_greedy"):
        calls.append((len(self.ledger), window, keep_failed, lapsed_when))
        return RefreshReport(checked=["a", "b"], lapsed=["b"], failed=["b: not the greedy answer"])

    with models.checkout("tiny") as editor:
        run_job(editor, context(tmp_path, edit_body(1, output_name="first")))
    monkeypatch.setattr(Editor, "refresh", fake_refresh)
    body = {**edit_body(2, output_name="second"), "continue_from": "first", "refresh": 4,
            "lapsed_when": "old_preferred"}
    with models.checkout("tiny") as editor:
        result = run_job(editor, context(tmp_path, body, job_id="job2"))
    assert calls == [(2, 4, False, "old_preferred")]  # after the job's own edit; a failed rewrite rolled back
    assert result["refresh"] == {"checked": 2, "lapsed": ["b"], "rewritten": [],
                                 "failed": ["b: not the greedy answer"], "held": []}


@pytest.mark.parametrize(("change", "message"), [
    ({"refresh": 4}, "'refresh' needs 'continue_from'"),
    ({"continue_from": "first", "lapsed_when": "old_preferred"}, "'lapsed_when' needs 'refresh'"),
    ({"continue_from": "first", "refresh": 0}, "greater than or equal to 1"),
    ({"continue_from": "first", "refresh": 65}, "less than or equal to 64"),
    ({"continue_from": "first", "refresh": 2, "lapsed_when": "sometimes"}, "lapsed_when"),
    ({"continue_from": "../first"}, "continue_from"),
    ({"kind": "evaluate", "method": None, "hparams": {}, "keep_failed": None, "continue_from": "first"},
     "'continue_from' is only for edit and repair jobs"),
])
def test_continuation_fields_are_checked_at_validation(change, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        JobCreate.model_validate({**edit_body(1), **change})
