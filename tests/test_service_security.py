"""The attacks of issue 15 replayed against the API in process (no workers) and against one job run on a
tiny model: file reads through path-valued fields, unbounded work, hyperparameters found bad only after
queueing, non-finite numbers, cancellation that does not stop, and the tenancy leaks.

The live faults (a killed GCS, a job cancelled mid corpus sampling, a job over its time limit, a two-node
cluster losing a node) are in tests/test_service_faults.py.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import TINY_HPARAMS, edit_body, save_tiny_model

from suture.editor.progress import cancellation_check, check_cancelled
from suture.service.api import create_app
from suture.service.jobs import JobCancelled, JobTimedOut, LoadedModels, ModelCatalog, RunContext, run_job
from suture.service.schemas import JobCreate
from suture.service.settings import JobLimits, ServiceSettings

ADMIN = "security-test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
REFUSED = "is not a readable file"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def home(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "corpus.txt").write_text("Paris is in France.\n\nRome is in Italy.\n\nBerlin is in Germany.\n")
    (data / "cases.jsonl").write_text(json.dumps(edit_body(1)["requests"][0]) + "\n")
    (data / "big.txt").write_text("x" * 5000)
    (data / "escape.txt").symlink_to("/etc/passwd")
    (tmp_path / "other-tenant").mkdir()
    (tmp_path / "other-tenant" / "notes.txt").write_text("private")
    return tmp_path


def make_app(home: Path, model_dir: Path, **overrides):
    limits = overrides.pop("limits", {"max_file_bytes": 4096})
    settings = ServiceSettings.from_env(database_url=f"sqlite:///{home / 'db' / 'jobs.db'}",
                                        artifacts_dir=home / "artifacts", data_dir=home / "data", dispatch=False,
                                        admin_token=ADMIN, models={"tiny": str(model_dir)}, limits=limits,
                                        **overrides)
    return create_app(settings)


@pytest.fixture
def client(home, model_dir):
    with TestClient(make_app(home, model_dir)) as c:
        yield c


def user(client, name) -> dict:
    created = client.post("/v1/tokens", json={"name": name}, headers=AUTH)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['token']}"}


def field_of(response) -> str:
    assert response.status_code == 422, (response.status_code, response.text)
    detail = response.json()["detail"]
    return " ".join(".".join(map(str, d["loc"])) + " " + d["msg"] for d in detail)


def with_hparams(**hparams) -> dict:
    merged = json.loads(json.dumps(TINY_HPARAMS))
    for key, value in hparams.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return edit_body(1, hparams=merged)


# --- files: no request field reads outside the data directories ------------------------------------------

@pytest.mark.parametrize("source", [
    "/etc/shadow", "/proc/self/environ", "../db/jobs.db", "../other-tenant/notes.txt", "escape.txt",
    "does-not-exist.txt", "big.txt", "/dev/zero", "", "corpus.txt\x00.png",
])
def test_corpus_source_outside_the_data_area_is_422_with_one_answer(client, home, source):
    alice = user(client, "alice")
    response = client.post("/v1/jobs", json=with_hparams(corpus={"source": source}), headers=alice)
    text = field_of(response)
    assert "hparams.corpus.source" in text and REFUSED in text
    assert "does not exist" not in text  # the same answer for missing and forbidden: no existence oracle
    assert client.get("/v1/jobs", headers=alice).json()["items"] == []  # nothing was queued


def test_the_absolute_path_of_the_other_tenant_is_refused_like_a_missing_one(client, home):
    alice = user(client, "alice")
    existing = client.post("/v1/jobs", json=with_hparams(corpus={"source": str(home / "other-tenant/notes.txt")}),
                           headers=alice)
    missing = client.post("/v1/jobs", json=with_hparams(corpus={"source": str(home / "other-tenant/none.txt")}),
                          headers=alice)
    strip = lambda r: field_of(r).replace("notes.txt", "X").replace("none.txt", "X")  # noqa: E731
    assert strip(existing) == strip(missing)


def test_corpus_source_inside_the_data_directory_is_accepted(client):
    response = client.post("/v1/jobs", json=with_hparams(corpus={"source": "corpus.txt"}), headers=AUTH)
    assert response.status_code == 202, response.text


def test_every_method_with_a_corpus_is_confined(client):
    memit = {**edit_body(1), "method": "memit", "hparams": {"layers": [1], "corpus": {"source": "/etc/passwd"}}}
    assert "hparams.corpus.source" in field_of(client.post("/v1/jobs", json=memit, headers=AUTH))
    remap = {"kind": "repair", "model": "tiny", "method": "head-remap", "hparams": {
        "layer": 1, "heads": [0], "undesired": ["a {}"], "desired": ["b {}"], "corpus": {"source": "/etc/passwd"}}}
    assert "hparams.corpus.source" in field_of(client.post("/v1/jobs", json=remap, headers=AUTH))


@pytest.mark.parametrize("path", ["../db/jobs.db", "/etc/passwd", "escape.txt", "missing.jsonl", "big.txt"])
def test_dataset_path_outside_or_missing_is_422_with_one_answer(client, path):
    body = {**edit_body(1), "requests": None, "dataset": {"path": path, "format": "jsonl"}}
    text = field_of(client.post("/v1/jobs", json=body, headers=AUTH))
    assert "dataset.path" in text and REFUSED in text


def test_dataset_inside_is_accepted(client):
    body = {**edit_body(1), "requests": None, "dataset": {"path": "cases.jsonl", "format": "jsonl"}}
    assert client.post("/v1/jobs", json=body, headers=AUTH).status_code == 202


def test_an_operator_directory_can_be_allowed(home, model_dir):
    with TestClient(make_app(home, model_dir, allowed_dirs=[home / "other-tenant"])) as c:
        ok = c.post("/v1/jobs", json=with_hparams(corpus={"source": str(home / "other-tenant/notes.txt")}),
                    headers=AUTH)
        assert ok.status_code == 202, ok.text


def test_the_worker_confines_again_at_run_time(model_dir, home):
    """A file swapped for a symlink after submission is still refused when the job runs."""
    models = LoadedModels(ModelCatalog({"tiny": str(model_dir)}), capacity=1)
    (home / "data" / "later.txt").symlink_to("/etc/passwd")
    spec = JobCreate.model_validate(with_hparams(corpus={"source": "later.txt"}))
    ctx = RunContext(job_id="j", spec=spec, artifacts_dir=home / "artifacts", data_dir=home / "data")
    with models.checkout("tiny") as editor, pytest.raises(Exception, match="hparams.corpus.source: .*" + REFUSED):
        run_job(editor, ctx)
    assert not (home / "artifacts" / "j").exists()


def test_a_dataset_offset_past_its_end_fails_naming_the_offset(home):
    from suture.service.jobs.runner import JobFailed, load_dataset
    from suture.service.schemas import DatasetRef

    with pytest.raises(JobFailed, match="offset 5"):
        load_dataset(DatasetRef(path="cases.jsonl", format="jsonl", offset=5), home / "data")


def test_failed_jobs_name_the_servers_directories_without_spelling_them_out(tmp_path):
    from types import SimpleNamespace

    from suture.service.workers.actor import EditWorker

    settings = SimpleNamespace(artifacts_dir=tmp_path / "art", data_dir=tmp_path / "data",
                               allowed_dirs=[tmp_path / "data" / "nested", Path("/srv/corpora")])
    worker = SimpleNamespace(settings=settings)
    message = (f"SutureError: {tmp_path}/data/bin.jsonl: cannot read; {tmp_path}/data/nested/x.txt; "
               f"/srv/corpora/a.txt; {tmp_path}/art/token-1/out")
    public = EditWorker._public(worker, message)
    assert str(tmp_path) not in public and "/srv/corpora" not in public
    assert public == ("SutureError: <data>/bin.jsonl: cannot read; <allowed dir>/x.txt; <allowed dir>/a.txt; "
                      "<artifacts>/token-1/out")


# --- limits: everything a request can make expensive ------------------------------------------------------

@pytest.mark.parametrize(("body", "field"), [
    (with_hparams(corpus={"n_samples": 10**7}), "hparams.corpus.n_samples"),
    (with_hparams(corpus={"max_tokens": 100_000}), "hparams.corpus.max_tokens"),
    (with_hparams(objective={"steps": 999}), "hparams.objective.steps"),
    (with_hparams(templates={"groups": [[10, 500]]}), "hparams.templates.groups"),
    (with_hparams(templates={"groups": [[5000, 2]]}), "hparams.templates.groups"),
    ({**edit_body(1), "method": "memit", "hparams": {"layers": [1], "chunk_size": 10**6}}, "hparams.chunk_size"),
    (edit_body(1001), "requests"),
    ({**edit_body(1), "requests": [{**edit_body(1)["requests"][0], "subject": "x" * 3000}]}, "requests.0.subject"),
    ({**edit_body(1), "requests": [{**edit_body(1)["requests"][0], "paraphrases": ["a b"] * 600}]},
     "requests.0.paraphrases"),
    ({**edit_body(1), "requests": None, "dataset": {"path": "cases.jsonl", "limit": 50_000}}, "dataset.limit"),
    ({**edit_body(1), "time_limit": 10**6}, "time_limit"),
    ({"kind": "evaluate", "model": "tiny", "requests": edit_body(1)["requests"],
      "evaluation": {"batch_size": 100_000}}, "evaluation.batch_size"),
    ({**edit_body(1), "gate": {"options": {"reference_texts": ["t"] * 1000}}}, "gate.options.reference_texts"),
    ({"kind": "repair", "model": "tiny", "method": "head-steer", "hparams": {
        "layer": 1, "heads": [0], "desired": ["a"] * 900, "undesired": ["b"]}}, "hparams.desired"),
    # a negative count must not let the sum hide a huge one; numbers sent as strings are numbers
    (with_hparams(templates={"groups": [[10, 1000], [10, -990]]}), "hparams.templates.groups"),
    (with_hparams(templates={"groups": [[-5, 3]]}), "hparams.templates.groups"),
    (with_hparams(corpus={"n_samples": "100000000"}), "hparams.corpus.n_samples"),
    # generation budgets of the evaluation and the gate
    ({"kind": "evaluate", "model": "tiny", "requests": edit_body(1)["requests"],
      "evaluation": {"generation_options": {"fluency_tokens": 10**12}}}, "fluency_tokens"),
    ({**edit_body(1), "gate": {"options": {"generation_options": {"chat_tokens": 100_000}}}}, "chat_tokens"),
])
def test_over_limit_requests_are_422_naming_the_field(client, body, field):
    assert field in field_of(client.post("/v1/jobs", json=body, headers=AUTH))


def test_a_job_may_hold_up_to_max_requests_requests(client):
    """The per-list bound of prompts (max_prompts) is not the bound on a job's requests (max_requests)."""
    assert client.post("/v1/jobs", json=edit_body(501), headers=AUTH).status_code == 202


@pytest.mark.parametrize(("record", "field"), [
    ({"paraphrases": ["a b"] * 600}, "paraphrases"), ({"subject": "x" * 3000, "prompt": "{} is"}, "subject")])
def test_dataset_records_are_bounded_as_inline_requests_are(home, record, field):
    """A file in the data directory must not carry what a request body may not (it would only be stopped by
    the job's time limit)."""
    from suture.service.jobs.runner import JobFailed, load_dataset
    from suture.service.schemas import DatasetRef

    case = {**edit_body(1)["requests"][0], **record}
    (home / "data" / "over.jsonl").write_text(json.dumps(edit_body(1)["requests"][0]) + "\n" + json.dumps(case) + "\n")
    with pytest.raises(JobFailed, match=f"dataset record 1, field '{field}': .*limits"):
        load_dataset(DatasetRef(path="over.jsonl", format="jsonl"), home / "data")


def test_a_422_does_not_echo_a_large_body(client):
    """One bad request of a few MB gets an answer of a few KB: each error names its field and reason, and
    echoes what was sent only when it is short."""
    repeated = {**edit_body(1)["requests"][0], "prompt": "{} " + "p" * 900, "subject": "s" * 400}
    clashing = client.post("/v1/jobs", json={**edit_body(1), "requests": [repeated] * 2000}, headers=AUTH)
    assert clashing.status_code == 422 and len(clashing.content) < 20_000
    assert "requests 0 and 1: field 'target_new'" in clashing.text and "1989 more clash(es)" in clashing.text
    unknown = client.post("/v1/jobs", json={**edit_body(1), "notes": "x" * 2_000_000}, headers=AUTH)
    assert unknown.status_code == 422 and len(unknown.content) < 2_000
    assert "notes" in field_of(unknown) and "not echoed" in unknown.text
    short = client.post("/v1/jobs", json={**edit_body(1), "time_limit": -1}, headers=AUTH)
    assert short.json()["detail"][0]["input"] == -1  # a short input is still echoed


def test_limits_are_the_operators(home, model_dir):
    with TestClient(make_app(home, model_dir, limits={"max_corpus_samples": 20})) as c:
        assert "max_corpus_samples" in field_of(c.post("/v1/jobs", json=with_hparams(corpus={"n_samples": 21}),
                                                       headers=AUTH))
        assert c.post("/v1/jobs", json=with_hparams(corpus={"n_samples": 20}), headers=AUTH).status_code == 202


def test_limits_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SUTURE_LIMITS", json.dumps({"max_steps": 7}))
    monkeypatch.setenv("SUTURE_JOB_TIME_LIMIT", "60")
    monkeypatch.setenv("SUTURE_ALLOWED_DIRS", f"{tmp_path}{os.pathsep}/srv/corpora")
    settings = ServiceSettings.from_env()
    assert settings.limits.max_steps == 7 and settings.job_time_limit == 60
    assert settings.allowed_dirs == [tmp_path, Path("/srv/corpora")]


def test_workers_load_models_in_the_configured_dtype(monkeypatch, tmp_path):
    """float32 unless SUTURE_MODEL_DTYPE asks otherwise (bf16 rounds away part of an edit); a bad value is
    refused by name."""
    import torch

    from suture.service.settings import SettingsError

    assert ServiceSettings.from_env().model_dtype == "float32"
    monkeypatch.setenv("SUTURE_MODEL_DTYPE", "bfloat16")
    settings = ServiceSettings.from_env()
    assert settings.model_dtype == "bfloat16"
    models = LoadedModels(ModelCatalog({"tiny": str(save_tiny_model(tmp_path / "tiny"))}), dtype=settings.model_dtype)
    with models.checkout("tiny") as editor:
        assert editor.handle.dtype == torch.bfloat16
    monkeypatch.setenv("SUTURE_MODEL_DTYPE", "int8")
    with pytest.raises(SettingsError, match="model_dtype"):
        ServiceSettings.from_env()


# --- hyperparameters: checked against the method's typed model and the model's config before queueing -----

@pytest.mark.parametrize(("body", "field"), [
    (with_hparams(layer=-1), "hparams.layer"),
    (with_hparams(layer=99), "hparams.layer"),  # the tiny model has 4 layers (from its config.json)
    (with_hparams(objective={"steps": 10**9}), "hparams.objective.steps"),
    (with_hparams(bogus=1), "hparams.bogus"),
    (with_hparams(ridge="much"), "hparams.ridge"),
    ({**edit_body(1), "method": "memit", "hparams": {"layers": [1], "chunk_size": 0}}, "hparams.chunk_size"),
    ({**edit_body(1), "method": "memit", "hparams": {"layers": [2, 1]}}, "hparams.layers"),
    ({**edit_body(1), "method": "memit", "hparams": {"layers": [1], "running_covariance": {"texts": 1001}}},
     "hparams.running_covariance.texts"),  # more than the corpus's 1,000 texts
    ({**edit_body(1), "method": "memit", "hparams": {"layers": [1], "running_covariance": {"every": 0}}},
     "hparams.running_covariance.every"),
    ({"kind": "repair", "model": "tiny", "method": "head-scale", "hparams": {"layer": 1, "heads": [9]}},
     "hparams.heads"),
    ({"kind": "repair", "model": "tiny", "method": "head-scale", "hparams": {"heads": [0]}}, "hparams.layer"),
    *[({"kind": "repair", "model": "tiny", "method": "head-tune",
        "hparams": {"heads": [[1, 0]], "failing": ["The capital of France is"], "answers": ["Paris"], **bad}}, field)
      for bad, field in [({"lr": 1e30}, "hparams.lr"), ({"steps": 10**9}, "hparams.steps"),
                         ({"answers": ["  "]}, "hparams.answers"), ({"kl_weight": "NaN"}, "hparams.kl_weight"),
                         ({"preservation": 1e300}, "hparams.preservation")]],
])
def test_bad_hyperparameters_are_422_before_queueing(client, body, field):
    assert field in field_of(client.post("/v1/jobs", json=body, headers=AUTH))
    assert client.get("/v1/jobs", headers=AUTH).json()["items"] == []


def test_method_schemas_and_unavailable_methods(client, monkeypatch):
    from suture.editor import registry

    schema = client.get("/v1/methods/rome", headers=AUTH).json()
    assert schema["job_kind"] == "edit" and "corpus" in schema["hparams_schema"]["properties"]
    assert client.get("/v1/methods/head-scale", headers=AUTH).json()["job_kind"] == "repair"
    assert client.get("/v1/methods/nope", headers=AUTH).status_code == 404
    error = "entry point broken = 'x:y' failed to load: ImportError"
    monkeypatch.setitem(registry._LOAD_ERRORS, "broken", error)
    listed = client.get("/v1/methods", headers=AUTH).json()
    assert "rome" in listed["items"] and {"name": "broken", "error": error} in listed["unavailable"]


def test_openapi_says_edit_jobs_need_a_method(client):
    job = client.get("/openapi.json").json()["components"]["schemas"]["JobCreate"]
    assert {"if": {"properties": {"kind": {"enum": ["edit", "repair"]}}, "required": ["kind"]},
            "then": {"required": ["method"]}} in job["allOf"]


# --- non-finite numbers -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "field"), [
    ('"gate": {"min_efficacy": NaN}', "gate.min_efficacy"),
    ('"gate": {"max_drift_kl": Infinity}', "gate.max_drift_kl"),
    ('"gate": {"max_drift_kl": -Infinity}', "gate.max_drift_kl"),
    ('"hparams": {"ridge": 1e400}', "hparams.ridge"),
    ('"hparams": {"layer": 1e400}', "hparams.layer"),
    ('"time_limit": NaN', "time_limit"),
    ('"hparams": {"objective": {"lr": NaN}}', "hparams.objective.lr"),
    ('"hparams": {"layer": 100000000000000000000000000000}', "hparams.layer"),
])
def test_non_finite_numbers_are_422_naming_the_field(client, raw, field):
    body = '{"kind": "edit", "model": "tiny", "method": "rome", "requests": [{"prompt": "The capital of {} is", ' \
           '"subject": "France", "target_new": "Rome"}], ' + raw + "}"
    response = client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert field in field_of(response)


def test_non_finite_in_a_field_with_its_own_type_error_is_422_not_500(client):
    body = ('{"kind": "edit", "model": "tiny", "method": "rome", "requests": null, '
            '"dataset": {"path": "cases.jsonl", "limit": 1e400}}')
    response = client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422 and "dataset.limit" in field_of(response)
    response = client.post("/v1/tokens", content='{"name": NaN}', headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422


# --- cancellation: every long loop checks, a cancelled job leaves nothing ----------------------------------

class Stop(Exception):
    pass


def test_cancellation_check_stops_corpus_sampling_within_a_token(model_dir):
    from suture.editor.handle import load_model
    from suture.editor.kv.corpus import sample_from_model

    handle = load_model(model_dir)
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 3:
            raise Stop

    started = time.perf_counter()
    with cancellation_check(check), pytest.raises(Stop):
        sample_from_model(handle, n=10_000, max_tokens=512, seed=0)
    assert time.perf_counter() - started < 5 and len(calls) == 4
    check_cancelled()  # the check is gone outside the block


@pytest.mark.parametrize("stage", ["corpus", "statistics", "value", "evaluation"])
def test_a_job_cancelled_in_any_phase_stops_and_leaves_nothing(model_dir, tmp_path, stage, monkeypatch):
    """The cancel arrives while the job is in `stage` (seen by the check installed around the run)."""
    monkeypatch.setenv("SUTURE_HOME", str(tmp_path / "home"))  # no cached corpus or statistics
    models = LoadedModels(ModelCatalog({"tiny": str(model_dir)}), capacity=1)
    body = {**with_hparams(), "output_name": "cancelled", "gate": {
        "min_efficacy": 0, "min_paraphrase": 0, "max_neighborhood_drop": 1, "max_drift_kl": 100}}
    where = {"corpus": "sample_from_model", "statistics": "measure_second_moment", "value": "optimize_values",
             "evaluation": "score_pairs"}[stage]

    def check():
        import inspect

        if any(frame.function == where for frame in inspect.stack(0)):
            raise JobCancelled("cancelled")

    ctx = RunContext(job_id="c", spec=JobCreate.model_validate(body), artifacts_dir=tmp_path / "out", check=check)
    with models.checkout("tiny") as editor:
        fingerprint = editor.handle.base_fingerprint
        with cancellation_check(check), pytest.raises(JobCancelled):
            run_job(editor, ctx)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with models.checkout("tiny") as editor:
        assert not editor.ledger and editor.handle.base_fingerprint == fingerprint


def test_a_job_over_its_time_limit_raises_timed_out(model_dir, tmp_path):
    models = LoadedModels(ModelCatalog({"tiny": str(model_dir)}), capacity=1)
    deadline = time.monotonic() + 0.2

    def check():
        if time.monotonic() > deadline:
            raise JobTimedOut("time limit exceeded")

    slow = {**with_hparams(corpus={"n_samples": 400, "max_tokens": 64}), "output_name": "late"}
    ctx = RunContext(job_id="t", spec=JobCreate.model_validate(slow), artifacts_dir=tmp_path / "out", check=check)
    started = time.perf_counter()
    with models.checkout("tiny") as editor, cancellation_check(check), pytest.raises(JobTimedOut):
        run_job(editor, ctx)
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "out" / "late").exists()


def test_limits_defaults_are_sane():
    limits = JobLimits()
    assert limits.max_corpus_samples >= 1000 and limits.max_steps >= 20  # the methods' defaults fit


# --- tenancy and the rest ----------------------------------------------------------------------------------

def test_files_are_created_owner_only(home, model_dir):
    with TestClient(make_app(home, model_dir)):
        pass
    assert stat.S_IMODE((home / "db" / "jobs.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "artifacts").stat().st_mode) == 0o700


def test_the_environments_admin_token_cannot_be_revoked_and_is_restored_at_start(home, model_dir):
    with TestClient(make_app(home, model_dir)) as c:
        mine = next(t for t in c.get("/v1/tokens", headers=AUTH).json() if "SUTURE_ADMIN_TOKEN" in t["name"])
        assert c.delete(f"/v1/tokens/{mine['id']}", headers=AUTH).status_code == 409
        c.app.state.suture.tokens.revoke(mine["id"])  # revoked behind the API's back (an older server)
        assert c.get("/v1/jobs", headers=AUTH).status_code == 401
    with TestClient(make_app(home, model_dir)) as c:  # the next start restores it
        assert c.get("/v1/jobs", headers=AUTH).status_code == 200


def test_the_cli_refuses_to_revoke_the_environments_admin_token(home, model_dir, monkeypatch, capsys):
    from suture.cli.main import main

    with TestClient(make_app(home, model_dir)) as c:
        mine = next(t for t in c.get("/v1/tokens", headers=AUTH).json() if "SUTURE_ADMIN_TOKEN" in t["name"])
        monkeypatch.setenv("SUTURE_DATABASE_URL", f"sqlite:///{home / 'db' / 'jobs.db'}")
        monkeypatch.delenv("SUTURE_ADMIN_TOKEN", raising=False)  # an operator's shell need not have it
        assert main(["token", "revoke", str(mine["id"])]) == 2
        assert "SUTURE_ADMIN_TOKEN" in capsys.readouterr().err
        assert c.get("/v1/jobs", headers=AUTH).status_code == 200  # the server keeps its admin


def test_revoking_a_token_cancels_its_jobs(client):
    mallory = user(client, "mallory")
    ids = [client.post("/v1/jobs", json=edit_body(1), headers=mallory).json()["id"] for _ in range(3)]
    other = client.post("/v1/jobs", json=edit_body(1), headers=AUTH).json()["id"]
    token_id = next(t["id"] for t in client.get("/v1/tokens", headers=AUTH).json() if t["name"] == "mallory")
    assert client.delete(f"/v1/tokens/{token_id}", headers=AUTH).status_code == 200
    assert {client.get(f"/v1/jobs/{i}", headers=AUTH).json()["status"] for i in ids} == {"cancelled"}
    assert client.get(f"/v1/jobs/{other}", headers=AUTH).json()["status"] == "queued"


def test_metrics_and_job_counts_need_a_token(client, home, model_dir):
    alice = user(client, "alice")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=alice).status_code == 403
    assert "suture_jobs" in client.get("/metrics", headers=AUTH).text
    anonymous = client.get("/healthz").json()
    assert anonymous["status"] == "ok" and "jobs" not in anonymous and anonymous["ray"] == "off"
    assert "jobs" not in client.get("/healthz", headers=alice).json()
    assert "jobs" in client.get("/healthz", headers=AUTH).json()
    with TestClient(make_app(home, model_dir, public_metrics=True)) as c:
        assert c.get("/metrics").status_code == 200


def test_an_over_limit_chunked_body_is_413(home, model_dir):
    with TestClient(make_app(home, model_dir, max_body_bytes=4096)) as c:
        def chunks():
            yield b'{"kind": "edit", "model": "tiny", "requests": ['
            for _ in range(100):
                yield b'{"prompt": "The capital of {} is", "subject": "France", "target_new": "Rome"},'
            yield b"]}"

        response = c.post("/v1/jobs", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code == 413
        small = json.dumps(edit_body(1)).encode()
        response = c.post("/v1/jobs", content=iter([small[:50], small[50:]]),
                          headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code == 202, response.text


def test_checkpoint_names_are_per_token(client):
    alice, bob = user(client, "alice"), user(client, "bob")
    assert client.post("/v1/jobs", json=edit_body(1, output_name="fix"), headers=alice).status_code == 202
    # Bob learns nothing about Alice's names and cannot squat them: his own "fix" is his.
    assert client.post("/v1/jobs", json=edit_body(1, output_name="fix"), headers=bob).status_code == 202
    again = client.post("/v1/jobs", json=edit_body(1, output_name="fix"), headers=alice)
    assert again.status_code == 409 and "your jobs" in again.json()["detail"]
    assert client.get("/v1/checkpoints/fix", headers=bob).status_code == 404  # not succeeded, and not Alice's


@pytest.mark.parametrize("why", ["cancel", "time limit"])
def test_a_job_that_misses_its_stop_has_its_worker_killed_and_leaves_nothing(tmp_path, why):
    """The dispatcher's forced stop: a run that did not stop by itself within the grace (stuck where no
    check runs) is recorded cancelled or failed, its worker replaced and its partial outputs removed."""
    from suture.service.jobs.outputs import owner_area
    from suture.service.store import JobStore, TokenStore, make_engine
    from suture.service.workers.dispatcher import Dispatcher
    from suture.service.workers.pool import Slot

    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    owner = TokenStore(engine).create("t").id
    store = JobStore(engine)
    job, _ = store.submit(owner, JobCreate.model_validate(edit_body(1, output_name="stuck")))
    assert store.claim(job.id, "w1")
    settings = ServiceSettings.from_env(database_url="sqlite://", artifacts_dir=tmp_path / "art",
                                        cancel_grace_seconds=0.5)
    staging = owner_area(settings.artifacts_dir, owner) / ".stuck.partial-x1"
    staging.mkdir(parents=True)
    (staging / "ledger.json").write_text("{}")

    class Pool:
        def __init__(self):
            self.slots = [Slot(actor=object(), name="w1", job_id=job.id, output_name="stuck", owner_id=owner,
                               started=time.monotonic(), time_limit=3600.0)]
            self.replaced = []

        def replace(self, slot):
            self.replaced.append(slot.name)
            self.slots[0] = Slot(actor=object(), name="w2")

    pool = Pool()
    dispatcher = Dispatcher(store, pool, settings)
    if why == "cancel":
        store.cancel(job.id)
        dispatcher._enforce()  # sees the flag: the grace starts now
        assert pool.replaced == [] and store.get(job.id).status == "running"
        pool.slots[0].cancel_seen -= 1.0
    else:
        pool.slots[0].started -= 3600 + 1.0
    dispatcher._last_enforce = 0.0
    dispatcher._enforce()
    finished = store.get(job.id)
    assert pool.replaced == ["w1"] and pool.slots[0].idle
    assert finished.status == ("cancelled" if why == "cancel" else "failed")
    assert "stopped by force" in finished.error and (why != "time limit" or "time limit" in finished.error)
    assert not staging.exists()


@pytest.mark.parametrize("extra", [{"gate": {"min_efficacy": 1.0}}, {"save_checkpoint": True},
                                   {"keep_failed": True}, {"hparams": {"layer": 1}}])
def test_evaluate_jobs_refuse_what_only_an_edit_job_uses(client, extra):
    """A gate on an evaluate job would decide nothing (nothing is written): refused, not ignored."""
    body = {"kind": "evaluate", "model": "tiny", "requests": edit_body(1)["requests"], **extra}
    answer = client.post("/v1/jobs", json=body, headers=AUTH)
    assert answer.status_code == 422 and next(iter(extra)) in answer.text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-inf", "1e400"])
def test_non_finite_hyperparameters_sent_as_strings_are_422(client, value):
    body = {"kind": "repair", "model": "tiny", "method": "head-scale",
            "hparams": {"layer": 0, "heads": [0], "factor": value}}
    answer = client.post("/v1/jobs", json=body, headers=AUTH)
    assert answer.status_code == 422 and "factor" in answer.text


def test_a_jobs_outputs_are_its_tenants_only_and_never_written_over_anothers(model_dir, tmp_path):
    """Outputs are owner-only whatever the artifacts mount's mode; a target that holds another job's files
    fails the job definitely (a retry cannot help) and is left as it is."""
    from suture.service.jobs.runner import JobFailed

    models = LoadedModels(ModelCatalog({"tiny": str(model_dir)}), capacity=1)
    area = tmp_path / "area"
    spec = JobCreate.model_validate({**edit_body(1), "keep_failed": True, "output_name": "mine"})
    with models.checkout("tiny") as editor:
        run_job(editor, RunContext(job_id="a", spec=spec, artifacts_dir=area))
        assert stat.S_IMODE((area / "mine").stat().st_mode) == 0o700
        theirs = area / "theirs"
        theirs.mkdir()
        (theirs / "job.json").write_text(json.dumps({"job_id": "someone-else"}))
        taken = JobCreate.model_validate({**edit_body(1), "keep_failed": True, "output_name": "theirs"})
        with pytest.raises(JobFailed, match="holds another job's outputs"):
            run_job(editor, RunContext(job_id="b", spec=taken, artifacts_dir=area))
    assert json.loads((theirs / "job.json").read_text()) == {"job_id": "someone-else"}
