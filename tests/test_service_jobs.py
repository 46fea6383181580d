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
