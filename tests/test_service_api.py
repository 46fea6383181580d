"""The REST API in process (no workers): auth, validation, idempotency, ownership, cancel, events, tokens,
metrics, and a schemathesis run against the OpenAPI schema (no 500s, no schema violations)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from suture.service.api import create_app
from suture.service.schemas import non_finite
from suture.service.settings import ServiceSettings

ADMIN = "api-test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
REQUEST = {"prompt": "The capital of {} is", "subject": "France", "target_new": "Rome"}
EDIT = {"kind": "edit", "model": "smollm2-135m", "method": "rome", "requests": [REQUEST]}


def make_app(directory: Path, **overrides):
    overrides.setdefault("max_body_bytes", 64 * 1024)
    settings = ServiceSettings.from_env(database_url=f"sqlite:///{directory / 'jobs.db'}", artifacts_dir=directory,
                                        dispatch=False, admin_token=ADMIN, **overrides)
    return create_app(settings)


@pytest.fixture
def client(tmp_path):
    with TestClient(make_app(tmp_path)) as c:
        yield c


def user_token(client, name="alice", admin=False) -> dict:
    created = client.post("/v1/tokens", json={"name": name, "admin": admin}, headers=AUTH)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['token']}"}


def test_no_token_or_a_bad_one_is_401(client):
    assert client.get("/v1/jobs").status_code == 401
    response = client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").status_code == 200  # health needs no token


def test_submit_answers_202_with_location(client):
    response = client.post("/v1/jobs", json=EDIT, headers=AUTH)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}" and job["status"] == "queued"
    assert client.get(response.headers["location"], headers=AUTH).json()["id"] == job["id"]


@pytest.mark.parametrize(("change", "field"), [
    ({"requests": [{**REQUEST, "prompt": "no placeholder"}]}, "prompt"),
    ({"requests": [{"prompt": "The capital of {} is", "subject": "France"}]}, "target_new"),
    ({"kind": "launch"}, "kind"),
    ({"hparams": "layer 4"}, "hparams"),
    ({"output_name": "../escape"}, "output_name"),
    ({"requests": []}, "requests"),
])
def test_malformed_bodies_are_422_naming_the_field(client, change, field):
    response = client.post("/v1/jobs", json={**EDIT, **change}, headers=AUTH)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(field in ".".join(map(str, d["loc"])) or field in d["msg"] for d in detail), detail


def _succeeded(client, body: dict, result: dict | None = None) -> None:
    """Submit `body` and mark its job succeeded with `result`, as a worker would (no workers run here)."""
    from suture.service.schemas import JobStatus

    job = client.post("/v1/jobs", json=body, headers=AUTH).json()
    jobs = client.app.state.suture.jobs
    assert jobs.claim(job["id"], "test") and jobs.finish(job["id"], JobStatus.succeeded, result=result or {})


def test_continue_from_names_a_succeeded_edit_output_of_the_same_model(client):
    _succeeded(client, {**EDIT, "output_name": "fix1"})
    _succeeded(client, {"kind": "evaluate", "model": "smollm2-135m", "requests": [REQUEST], "output_name": "ev1"})
    answer = client.post("/v1/jobs", json={**EDIT, "continue_from": "nope"}, headers=AUTH)
    assert answer.status_code == 404 and "continue_from: no succeeded job output named 'nope'" in answer.text
    answer = client.post("/v1/jobs", json={**EDIT, "continue_from": "ev1"}, headers=AUTH)
    assert answer.status_code == 422 and "evaluate job's output" in answer.text
    answer = client.post("/v1/jobs", json={**EDIT, "model": "gemma3-270m", "continue_from": "fix1"}, headers=AUTH)
    assert answer.status_code == 422 and "was made on model 'smollm2-135m'" in answer.text
    answer = client.post("/v1/jobs", json={**EDIT, "continue_from": "fix1", "refresh": 8,
                                           "lapsed_when": "old_preferred"}, headers=AUTH)
    assert answer.status_code == 202, answer.text
    alice = user_token(client)  # output names are per token: another token's output is not found
    answer = client.post("/v1/jobs", json={**EDIT, "continue_from": "fix1"}, headers=alice)
    assert answer.status_code == 404


def test_continue_from_a_session_at_the_servers_cap_is_refused(tmp_path):
    from suture.service.settings import JobLimits

    with TestClient(make_app(tmp_path, limits=JobLimits(max_session_edits=3))) as client:
        _succeeded(client, {**EDIT, "output_name": "two"}, {"edits": [{"id": "a"}, {"id": "b"}]})
        _succeeded(client, {**EDIT, "output_name": "three"}, {"edits": [{"id": "a"}, {"id": "b"}, {"id": "c"}]})
        assert client.post("/v1/jobs", json={**EDIT, "continue_from": "two"}, headers=AUTH).status_code == 202
        answer = client.post("/v1/jobs", json={**EDIT, "continue_from": "three"}, headers=AUTH)
        assert answer.status_code == 422
        assert "continue_from: 'three' holds 3 ledger entries" in answer.text
        assert "limits.max_session_edits" in answer.text


def test_oversized_body_is_413(client):
    big = {**EDIT, "requests": [{**REQUEST, "paraphrases": ["The capital of France is " * 20] * 200}]}
    assert client.post("/v1/jobs", json=big, headers=AUTH).status_code == 413


def test_unknown_model_404_and_method_400_list_the_valid_ones(client):
    response = client.post("/v1/jobs", json={**EDIT, "model": "gpt-9"}, headers=AUTH)
    assert response.status_code == 404 and "smollm2-135m" in response.json()["detail"]
    response = client.post("/v1/jobs", json={**EDIT, "method": "rom"}, headers=AUTH)
    assert response.status_code == 400 and "rome" in response.json()["detail"] and "memit" in response.json()["detail"]
    response = client.post("/v1/jobs", json={**EDIT, "method": "head-scale"}, headers=AUTH)
    assert response.status_code == 400 and "repair" in response.json()["detail"]


def test_idempotency_key_returns_the_same_job(client):
    headers = {**AUTH, "Idempotency-Key": "fix-42"}
    first = client.post("/v1/jobs", json=EDIT, headers=headers)
    second = client.post("/v1/jobs", json=EDIT, headers=headers)
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"] and second.headers["idempotent-replayed"] == "true"
    conflict = client.post("/v1/jobs", json={**EDIT, "requests": [{**REQUEST, "target_new": "Oslo"}]},
                           headers=headers)
    assert conflict.status_code == 409
    assert len(client.get("/v1/jobs", headers=AUTH).json()["items"]) == 1


def test_a_token_sees_only_its_own_jobs_and_admins_see_all(client):
    alice, bob = user_token(client, "alice"), user_token(client, "bob")
    job = client.post("/v1/jobs", json=EDIT, headers=alice).json()
    client.post("/v1/jobs", json=EDIT, headers=bob)
    assert client.get(f"/v1/jobs/{job['id']}", headers=bob).status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=bob).status_code == 404
    assert [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["items"]] == [job["id"]]
    assert len(client.get("/v1/jobs", headers=AUTH).json()["items"]) == 2
    assert client.post("/v1/tokens", json={"name": "eve"}, headers=alice).status_code == 403


def test_a_failed_jobs_name_goes_to_the_next_job_with_what_its_run_left_behind(client):
    """A run that died after writing can leave files under the name of a job that then failed: the next job
    that asks for the name gets it, and those files (their job.json names the failed job) are removed."""
    from suture.service.jobs.outputs import owner_area
    from suture.service.schemas import JobStatus

    st = client.app.state.suture
    first = client.post("/v1/jobs", json={**EDIT, "output_name": "retry"}, headers=AUTH).json()
    assert st.jobs.claim(first["id"], "test") and st.jobs.finish(first["id"], JobStatus.failed, error="died")
    owner = st.jobs.row(first["id"]).owner_id
    left = owner_area(st.settings.artifacts_dir, owner) / "retry"
    left.mkdir(parents=True)
    (left / "job.json").write_text(json.dumps({"job_id": first["id"]}))
    second = client.post("/v1/jobs", json={**EDIT, "output_name": "retry"}, headers=AUTH)
    assert second.status_code == 202 and second.json()["output_name"] == "retry" and not left.exists()
    assert client.get(f"/v1/jobs/{first['id']}", headers=AUTH).json()["output_name"] is None
    again = client.post("/v1/jobs", json={**EDIT, "output_name": "retry"}, headers=AUTH)
    assert again.status_code == 409  # now held by a queued job


def test_an_admin_reaches_every_checkpoint_of_a_shared_name_by_job_id(client):
    """Names are per token: two tokens may both have 'afix'. An admin asking for the name is told it is
    ambiguous and given the job ids; by job id each one is reached (and only an admin reaches another's)."""
    from suture.service.jobs.outputs import output_dir
    from suture.service.schemas import JobStatus

    alice, bob = user_token(client, "alice"), user_token(client, "bob")
    st = client.app.state.suture
    ids = []
    for headers in (alice, bob):
        job = client.post("/v1/jobs", json={**EDIT, "output_name": "afix"}, headers=headers).json()
        assert st.jobs.claim(job["id"], "test") and st.jobs.finish(job["id"], JobStatus.succeeded, result={})
        row = st.jobs.row(job["id"])
        directory = output_dir(st.settings.artifacts_dir, row.owner_id, "afix", job["id"])
        directory.mkdir(parents=True)
        (directory / "ledger.json").write_text("{}")
        ids.append(job["id"])
    ambiguous = client.get("/v1/checkpoints/afix", headers=AUTH)
    assert ambiguous.status_code == 409 and all(i in ambiguous.text for i in ids)
    for job_id in ids:
        view = client.get(f"/v1/checkpoints/{job_id}", headers=AUTH).json()
        assert view["job_id"] == job_id and view["name"] == "afix" and view["files"] == ["ledger.json"]
        assert client.get(f"/v1/checkpoints/{job_id}/files/ledger.json", headers=AUTH).status_code == 200
    assert client.get("/v1/checkpoints/afix", headers=alice).json()["job_id"] == ids[0]  # a token's own name
    assert client.get(f"/v1/checkpoints/{ids[1]}", headers=alice).status_code == 404  # not another's


def test_the_job_body_is_parsed_off_the_event_loop(client, monkeypatch):
    """A large body's parsing and validation run in a worker thread, so other callers are not kept waiting."""
    import asyncio

    from suture.service.api import job_body, routes_jobs

    where = []

    def spy(raw: bytes, content_type: str | None = None):
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append("worker thread")
        return job_body.parse_job(raw, content_type)

    monkeypatch.setattr(routes_jobs, "parse_job", spy)
    assert client.post("/v1/jobs", json=EDIT, headers=AUTH).status_code == 202
    assert where == ["worker thread"]


@pytest.mark.parametrize("raw", [b"{not json", b"[" * 100_000 + b"]" * 100_000, b"", "\u00e9".encode("latin-1")])
def test_a_body_that_is_not_json_is_422(tmp_path, raw):
    with TestClient(make_app(tmp_path, max_body_bytes=1_000_000)) as client:
        response = client.post("/v1/jobs", content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(("content_type", "accepted"), [
    ("text/plain", False), ("application/x-www-form-urlencoded", False), ("application/json; charset=utf-8", True),
    ("application/merge-patch+json", True)])
def test_a_job_body_must_be_sent_as_json(client, content_type, accepted):
    response = client.post("/v1/jobs", content=json.dumps(EDIT), headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == (202 if accepted else 422), response.text
    if not accepted:
        assert response.json()["detail"][0]["type"] == "content_type"


def test_pagination_and_filters(client):
    ids = [client.post("/v1/jobs", json=EDIT, headers=AUTH).json()["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                          headers=AUTH).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert client.get("/v1/jobs", params={"status": "running"}, headers=AUTH).json()["items"] == []
    assert client.get("/v1/jobs", params={"status": "bogus"}, headers=AUTH).status_code == 422


def test_cancel_a_queued_job_and_its_events_end(client):
    job = client.post("/v1/jobs", json=EDIT, headers=AUTH).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH).json()
    assert cancelled["status"] == "cancelled"
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=AUTH) as stream:
        text = "".join(stream.iter_text())
    assert "event: end" in text and '"status": "cancelled"' in text


def test_revoked_tokens_stop_working(client):
    headers = user_token(client, "carol")
    token_id = next(t["id"] for t in client.get("/v1/tokens", headers=AUTH).json() if t["name"] == "carol")
    assert client.delete(f"/v1/tokens/{token_id}", headers=AUTH).json()["revoked"]
    assert client.get("/v1/jobs", headers=headers).status_code == 401
    assert client.delete("/v1/tokens/99999", headers=AUTH).status_code == 404


def test_catalogs_and_metrics(client):
    assert "smollm2-135m" in client.get("/v1/models", headers=AUTH).json()["items"]
    assert {"rome", "memit", "head-steer"} <= set(client.get("/v1/methods", headers=AUTH).json()["items"])
    client.post("/v1/jobs", json=EDIT, headers=AUTH)
    text = client.get("/metrics", headers=AUTH).text
    assert 'suture_jobs{status="queued"} 1.0' in text and "suture_jobs_submitted_total" in text
    assert "suture_http_requests_total" in text


def test_checkpoints_404_for_unknown_names(client):
    assert client.get("/v1/checkpoints", headers=AUTH).json() == []
    assert client.get("/v1/checkpoints/nope", headers=AUTH).status_code == 404
    assert client.get("/v1/checkpoints/nope/archive", headers=AUTH).status_code == 404


# --- schemathesis: every operation, generated inputs, against the generated OpenAPI schema ----------------

# The default body limit (10 MB): bodies that break maxItems must reach validation (422), not the limit (413).
_app = make_app(Path(tempfile.mkdtemp(prefix="suture-schemathesis-")), max_body_bytes=10 * 1024 * 1024)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.auth()
class AdminToken:
    """Authenticate generated requests as the admin, so they reach the routes' own validation."""

    def get(self, case, context):
        return ADMIN

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


NON_FINITE = [float("nan"), float("inf"), float("-inf"), 1e400]  # 1e400 is what JSON's 1e400 parses to


@schema.hook("flatmap_body")
def non_finite_numbers(context, body):
    """Also send bodies with one number made NaN, Infinity, -Infinity or 1e400 (Python's JSON writes them as
    the NaN/Infinity tokens, which the server's parser accepts): the answer must be 422, never a 500."""
    from hypothesis import strategies as st

    numbers: list[tuple] = []

    def walk(value, path):
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            numbers.append(path)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i))

    walk(body, ())
    if not isinstance(body, dict):
        return st.just(body)

    def replaced(choice):
        path, number, extra = choice
        if path is None:  # no number in the body: add a field that holds one
            return {**body, **json.loads(json.dumps(extra).replace('"N"', json.dumps(number)))}
        copy = json.loads(json.dumps(body))
        target = copy
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = number
        return copy

    places = st.sampled_from(numbers or [None])
    extras = st.sampled_from([{"hparams": {"ridge": "N"}}, {"gate": {"min_efficacy": "N"}}, {"time_limit": "N"},
                              {"dataset": {"path": "x.json", "limit": "N"}}, {"evaluation": {"batch_size": "N"}}])
    mutated = st.tuples(places, st.sampled_from(NON_FINITE), extras).map(replaced)
    return st.one_of(mutated, mutated, st.just(body))  # two thirds of the bodies carry a non-finite number


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_no_server_errors_and_no_schema_violations(case):
    # Every check runs (server errors, status codes, content types, response schemas, negative data)
    # except "schema-valid data is accepted": a job body can be schema-valid and still wrong in ways JSON
    # Schema does not express (an edit job without requests, an unknown model), which are 4xx by design.
    if isinstance(case.body, dict) and non_finite(case.body) is not None:
        # `requests` refuses to write NaN/Infinity; send the body as Python's JSON writes it.
        case.headers = {**(case.headers or {}), **AUTH, "Content-Type": "application/json"}
        response = case.call(json=None, data=json.dumps(case.body).encode())
        assert response.status_code == 422, (response.status_code, response.text)
        case.validate_response(response, excluded_checks=[positive_data_acceptance])
        return
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
