"""Run one job (edit, evaluate, repair) on a checked-out model and write its small durable outputs.

Outputs go to `<artifacts>/<output_name>/` through one atomic directory: `job.json`, `ledger.json`,
`session.pt` (every edit with its deltas, which a later job's `continue_from` restores) for edit and repair
jobs, `report.json` + `report.html` when evaluated, `adapter/` (PEFT LoRA) when the edits allow one, and
`checkpoint/` (the full merged model) only when the job asks for it. A gate that fails leaves nothing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suture.editor import Editor, EditRequest, EditRequestsFailedError, GateDecision
from suture.editor.atomic import atomic_directory
from suture.editor.errors import SutureError
from suture.editor.ledger import replay_ledger
from suture.editor.progress import ProgressTracker
from suture.editor.registry import get_method
from suture.evaluation import (
    EvaluationOptions,
    EvaluationReport,
    evaluate,
    load_counterfact,
    load_requests_jsonl,
    load_zsre,
)
from suture.evaluation.html_report import write_report
from suture.service.jobs.admission import Inadmissible, check_bounds, confine_corpus_sources
from suture.service.jobs.files import FileRefused, confined_file, data_roots
from suture.service.schemas import DatasetRef, JobCreate, JobKind
from suture.service.settings import JobLimits

SESSION_FILE = "session.pt"  # an output's edits with their deltas (Editor.save_session)


class JobCancelled(Exception):
    """The job's cancel flag was seen at a progress report or a cancellation check."""


class JobTimedOut(JobCancelled):
    """The job ran past its time limit (seen at a cancellation check)."""


class JobFailed(SutureError):
    """The job ran to a definite failure (bad input found late, a failed gate); retrying will not help."""

    def __init__(self, message: str, result: dict[str, Any] | None = None):
        super().__init__(message)
        self.result = result


@dataclass
class RunContext:
    job_id: str
    spec: JobCreate
    artifacts_dir: Path
    data_dir: Path | None = None
    report: Callable[[float, str], None] = lambda fraction, stage: None  # may raise JobCancelled
    # Called between steps of every long loop (editor.progress.check_cancelled); raises JobCancelled or
    # JobTimedOut to stop the job. The caller installs it around run_job (see workers/actor.py).
    check: Callable[[], None] = lambda: None
    allowed_dirs: list[Path] = field(default_factory=list)
    limits: JobLimits = field(default_factory=JobLimits)

    @property
    def roots(self) -> list[Path]:
        return data_roots(self.data_dir, self.allowed_dirs)
    verdicts: list[dict[str, Any]] | None = None  # per-request verdicts of the edit, once applied
    status: str | None = None  # "succeeded" or "partial" (keep_failed) once applied
    noops: dict[str, Any] = field(default_factory=dict)  # "noop" / "noop_broken" of the edit's details


class _Decided:
    """A gate whose decision was already taken (the report is computed once per job)."""

    def __init__(self, decision: GateDecision):
        self.decision = decision

    def decide(self, editor: Editor) -> GateDecision:
        return self.decision


def load_dataset(ref: DatasetRef, data_dir: Path | None, allowed_dirs: list[Path] | None = None,
                 limits: JobLimits | None = None) -> list[EditRequest]:
    """The dataset's cases: a bounded file inside the data directories, at most `limits.max_requests`."""
    limits = limits or JobLimits()
    if data_dir is None:
        raise JobFailed("dataset: this server has no data directory (SUTURE_DATA_DIR); send 'requests' instead")
    try:
        path = confined_file(ref.path, "dataset.path", data_roots(data_dir, allowed_dirs or []),
                             limits.max_file_bytes)
    except FileRefused as exc:
        raise JobFailed(str(exc)) from None
    limit = min(ref.limit or limits.max_requests, limits.max_requests)
    if ref.format == "jsonl":
        cases = load_requests_jsonl(path)[ref.offset:][:limit]
    else:
        loader = load_counterfact if ref.format == "counterfact" else load_zsre
        cases = loader(path, limit=limit, offset=ref.offset)
    if not cases:
        raise JobFailed(f"dataset: no records from offset {ref.offset} on ({ref.path!r} ends before it)")
    # The bounds inline requests get (paraphrases, texts): a file must not carry what a body may not.
    for i, case in enumerate(cases):
        try:
            check_bounds(case.model_dump(), "", limits)
        except Inadmissible as exc:
            field = exc.field.lstrip(".")
            raise JobFailed(f"dataset record {ref.offset + i}, field '{field}': {exc.message}") from None
    return cases


def _cases(ctx: RunContext) -> list[EditRequest] | None:
    if ctx.spec.requests:
        return list(ctx.spec.requests)
    if ctx.spec.dataset is not None:
        return load_dataset(ctx.spec.dataset, ctx.data_dir, ctx.allowed_dirs, ctx.limits)
    return None


def _summary(report: EvaluationReport) -> dict[str, Any]:
    out: dict[str, Any] = {"n_cases": report.n_cases, "pre": report.pre.model_dump(), "post": report.post.model_dump(),
                           "neighborhood_drop": report.neighborhood_drop}
    if report.drift is not None:
        out["drift"] = {"mean_kl": report.drift.mean_kl, "top1_agreement": report.drift.top1_agreement}
    if report.generated is not None:  # greedy answers judged; apart from the teacher-forced pre/post
        g = report.generated
        out["generated"] = {"efficacy": g.efficacy, "paraphrase": g.paraphrase, "chat": g.chat,
                            "generation_prompts": g.generation_prompts, "locality": g.locality,
                            "portability": g.portability,
                            "fluency": None if g.fluency is None else {**g.fluency.model_dump(),
                                                                      "ratio": g.fluency.ratio}}
    return out


def run_job(editor: Editor, ctx: RunContext) -> dict[str, Any]:
    """Run the job on `editor` (a model with an empty ledger) and return its result document."""
    spec, started = ctx.spec, time.perf_counter()
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"output_name": spec.output_name or ctx.job_id}
    cases = _cases(ctx)
    ctx.report(0.0, "starting")

    if spec.kind is JobKind.evaluate:
        report = _evaluate_job(editor, ctx, cases, timings)
        decision = None
    else:
        if spec.continue_from is not None:
            result["continued"] = _restore_edits(editor, ctx, spec.continue_from, "continue_from", timings)
        _apply(editor, ctx, cases, timings)
        if spec.refresh is not None:
            result["refresh"] = _refresh(editor, ctx, timings)
        if ctx.verdicts is not None:
            result["verdicts"], result["status"] = ctx.verdicts, ctx.status
        result.update(ctx.noops)  # requests not edited because the model already said them
        report, decision = _gate(editor, ctx, cases, timings)
    if report is not None:
        result["report"] = _summary(report)
    if decision is not None:
        result["gate"] = {"passed": decision.passed, "failures": decision.failures,
                          "not_measured": decision.not_measured}
        if not decision.passed:
            raise JobFailed("gate failed: " + "; ".join(decision.failures), result)
    ctx.report(0.95, "writing outputs")
    t = time.perf_counter()
    result["files"] = _write_outputs(editor, ctx, report, decision, result)
    timings["outputs"] = time.perf_counter() - t
    result["edits"] = [{"id": e.id, "method": e.method, "requests": len(e.requests), "seconds": e.seconds}
                       for e in editor.ledger]
    result["seconds"] = {**timings, "total": time.perf_counter() - started}
    return result


def _apply(editor: Editor, ctx: RunContext, cases: list[EditRequest] | None, timings: dict[str, float]) -> None:
    spec = ctx.spec
    method = get_method(spec.method)
    if spec.kind is JobKind.edit and not method.takes_requests:
        raise JobFailed(f"method: {spec.method!r} takes no edit requests; submit it as a 'repair' job")
    if spec.kind is JobKind.repair and method.takes_requests:
        raise JobFailed(f"method: {spec.method!r} edits with requests; submit it as an 'edit' job")
    requests = cases if spec.kind is JobKind.edit else None
    tracker = ProgressTracker()
    share = 0.8 if spec.gate else 0.9  # the rest of the bar is evaluation and writing

    def progress(stage: str, fraction: float) -> None:  # the stage names the call: "value (request 3/10)"
        ctx.report(share * tracker.update(fraction), f"{spec.method}: {stage}")

    try:  # file sources are confined again now: the file may have changed since submission
        hparams = confine_corpus_sources(method, spec.hparams, ctx.roots, ctx.limits)
    except FileRefused as exc:
        raise JobFailed(str(exc)) from None
    t = time.perf_counter()
    try:
        applied = editor.apply(requests, method=spec.method, progress=progress, keep_failed=spec.keep_failed,
                               **hparams)
    except EditRequestsFailedError as exc:  # rolled back: the job fails, naming each request
        raise JobFailed(str(exc), {"verdicts": [v.model_dump(mode="json") for v in exc.verdicts],
                                   "status": "failed"}) from None
    timings["edit"] = time.perf_counter() - t
    if applied.verdicts:
        ctx.verdicts = [v.model_dump(mode="json") for v in applied.verdicts]
        ctx.status = applied.status
    for name in ("noop", "noop_broken"):  # requests left out as already answered, and any the edit broke
        if applied.details.get(name):
            ctx.noops[name] = applied.details[name]


def _restore_edits(editor: Editor, ctx: RunContext, output: str, field_name: str,
                   timings: dict[str, float]) -> dict[str, Any]:
    """Put an earlier output's edits into `editor`: restored from its session.pt (the deltas as written, in
    time independent of how they were computed), else recomputed from its ledger.json (outputs written
    before sessions were kept). `output` matched NAME_PATTERN at admission, so it names a directory
    directly inside this token's artifacts."""
    directory = ctx.artifacts_dir / output
    session, ledger = directory / SESSION_FILE, directory / "ledger.json"
    ctx.report(0.0, f"{field_name}: restoring the edits of {output!r}")
    if session.is_file():
        how, restore = "restored", lambda: editor.restore_session(session)
    elif ledger.is_file():
        how, restore = "replayed", lambda: replay_ledger(editor, json.loads(ledger.read_text()))
    else:
        raise JobFailed(f"{field_name}: no output {output!r} with edits to build on (none was written under "
                        "this name, or it was deleted)")
    t = time.perf_counter()
    try:
        restore()
    except (SutureError, ValueError) as exc:  # another base model, a damaged file; no server path in the answer
        raise JobFailed(f"{field_name}: " + str(exc).replace(str(directory), repr(output))) from None
    timings["restore"] = time.perf_counter() - t
    if len(editor.ledger) >= ctx.limits.max_session_edits:  # the file may have grown since submission
        cap = ctx.limits.max_session_edits
        raise JobFailed(f"{field_name}: {output!r} holds {len(editor.ledger)} ledger entries; this server "
                        f"continues sessions of at most {cap - 1} (limits.max_session_edits)")
    return {"from": output, "edits": len(editor.ledger), "how": how}


def _refresh(editor: Editor, ctx: RunContext, timings: dict[str, float]) -> dict[str, Any]:
    spec = ctx.spec
    ctx.report(0.8 if spec.gate else 0.9, f"refresh: checking {spec.refresh} earlier requests")
    t = time.perf_counter()
    try:
        report = editor.refresh(spec.refresh, lapsed_when=spec.lapsed_when or "not_greedy")
    except SutureError as exc:
        raise JobFailed(f"refresh: {exc}") from None
    timings["refresh"] = time.perf_counter() - t
    return {"checked": len(report.checked), "lapsed": report.lapsed,
            "rewritten": [r.requests[0].label for r in report.rewritten if r.requests],
            "failed": report.failed, "held": report.held}


def _gate(editor: Editor, ctx: RunContext, cases: list[EditRequest] | None, timings: dict[str, float]):
    gate = ctx.spec.gate
    if gate is None:
        return None, None
    ctx.report(0.8, "gate: evaluating")
    t = time.perf_counter()
    if not cases:  # repair jobs take no requests to edit; their cases are what the gate measures
        raise JobFailed("gate: needs cases to measure ('requests' or 'dataset')")
    report = evaluate(editor, cases, options=gate.options)
    timings["gate"] = time.perf_counter() - t
    return report, gate.decide_on(report)


def _evaluate_job(editor: Editor, ctx: RunContext, cases: list[EditRequest] | None, timings: dict[str, float]):
    spec = ctx.spec
    if spec.ledger_from is not None:
        _restore_edits(editor, ctx, spec.ledger_from, "ledger_from", timings)
    ctx.report(0.4, "evaluating")
    t = time.perf_counter()
    try:
        report = evaluate(editor, cases, options=spec.evaluation or EvaluationOptions())
    except SutureError as exc:
        raise JobFailed(str(exc)) from None
    timings["evaluate"] = time.perf_counter() - t
    return report


def _write_outputs(editor: Editor, ctx: RunContext, report: EvaluationReport | None,
                   decision: GateDecision | None, result: dict[str, Any]) -> list[str]:
    spec = ctx.spec
    target = ctx.artifacts_dir / (spec.output_name or ctx.job_id)
    notes: dict[str, str] = {}
    _remove_earlier_attempt(target, ctx.job_id)
    if target.is_dir() and any(target.iterdir()):  # another job's: never replaced, and retrying cannot help
        raise JobFailed(f"output_name {target.name!r}: the directory holds another job's outputs")
    with atomic_directory(target, mode=0o700) as staging:  # one tenant's, whatever the artifacts mount's mode
        (staging / "ledger.json").write_text(json.dumps(editor.ledger_json(), indent=1))
        if spec.kind is not JobKind.evaluate and editor.ledger:
            editor.save_session(staging / SESSION_FILE)
        if report is not None:
            write_report(report, staging, title=f"suture job {ctx.job_id}")
        ctx.check()
        if spec.export_adapter and editor.ledger:
            try:
                editor.export_adapter(staging / "adapter")
            except SutureError as exc:  # e.g. head repairs that create biases have no LoRA form
                notes["adapter"] = str(exc)
        ctx.check()
        if spec.save_checkpoint and editor.ledger:
            ctx.report(0.97, "writing checkpoint")
            editor.save(staging / "checkpoint", gate=_Decided(decision) if decision is not None else None)
        document = {"job_id": ctx.job_id, "spec": spec.model_dump(mode="json"), "notes": notes,
                    "base_fingerprint_sha256": editor.handle.base_fingerprint,
                    "report": result.get("report"), "gate": result.get("gate")}
        (staging / "job.json").write_text(json.dumps(document, indent=1))
        ctx.check()  # the last moment a cancel can still leave nothing behind
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
    if notes:
        result["notes"] = notes
    return files


def discard_outputs(artifacts_dir: Path, output_name: str, job_id: str) -> None:
    """Remove what a run of `job_id` that was stopped by force may have left: its staging directories, and
    its output directory when job.json says it is this job's (a run killed between writing and recording)."""
    for staging in artifacts_dir.glob(f".{output_name}.partial-*"):
        shutil.rmtree(staging, ignore_errors=True)
    target = artifacts_dir / output_name
    with contextlib.suppress(OSError, ValueError):
        _remove_earlier_attempt(target, job_id)


def _remove_earlier_attempt(target: Path, job_id: str) -> None:
    """An attempt that wrote its outputs but died before the store heard of it left them behind: they are
    this job's own (job.json says so) and the new attempt replaces them. Anything else is never touched."""
    marker = target / "job.json"
    if marker.is_file() and json.loads(marker.read_text()).get("job_id") == job_id:
        shutil.rmtree(target)
