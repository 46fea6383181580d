"""Sequential editing: many edits applied one after another to one model, with quality measured over
all edits so far at checkpoints.

    python benchmarks/sequential.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --n 500 --checkpoints 10,50,100,250,500 --batch-size 1 --out sequential.json --plot sequential.png

Variants: rome, memit, memit+null (null-space preservation), memit+anchor (norm anchoring),
memit+anchor+preserve (anchored, earlier edits' keys kept in each solve), memit+preserve, memit+ngd+preserve
(short values written in two rounds), memit+ngd+preserve+until (a second round only where needed),
memit+ngd+preserve+until+words (and a subject's last common word held), ...+fisher (value steps in the
output-Fisher metric), ...+orth (each value orthogonal to the earlier values' shared direction), ...+orth+mean
(and the corpus mean key held in each solve), ...+orth+least (each edit written at the least
scale that still takes, plus a tenth: least_write), ...+least+running (and each solve against the key
covariance of the model as edited so far: running_covariance), rome+anchor, rome+null.
At each checkpoint: Efficacy / Paraphrase / Neighborhood over every edit applied so far,
drift (mean KL and top-1 agreement to the unedited model on reference text), growth of the edited weights
(largest ‖W‖/‖W₀‖ - 1 and ‖W - W₀‖/‖W₀‖ over them), seconds per edit (mean over all edits so far, and mean
and median over the edits since the previous checkpoint: whether an edit gets slower as the ledger grows;
with the mean number of value-optimization steps over those edits, where most of an edit's time goes),
the share of the edits whose verdict passed when they were made (written, against efficacy: kept), and
with --generated the generated metrics (over a seeded sample of the edits so far with --generated-sample).
With --refresh W, after each apply the editor checks W earlier requests (round robin) and writes again those
that later edits undid (`Editor.refresh`); its time counts in the edit's, and the rows count what it found.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

from bench_common import add_generated_options, benchmark_parser, generated_row, json_object, load_editor, ready

# Short values: normalized-gradient steps stop at the test with about half Adam's ‖δ‖ (BENCHMARKS.md, "Short
# values").
NGD_OBJECTIVE = {"optimizer": "normalized_gradient", "lr": 0.25, "steps": 40, "early_stop_nll": 0.6}
# Short values written in two rounds over the layers (the second writes what the first left missing), with
# earlier edits' keys held in each solve.
NGD_PRESERVE = {"preserve_earlier": 1.0, "rounds": 2, "objective": NGD_OBJECTIVE}

VARIANTS = {
    "rome": ("rome", {}),
    "rome+anchor": ("rome", {"norm_anchor": {}}),
    "rome+null": ("rome", {"null_space": {}}),
    "memit": ("memit", {}),
    "memit+null": ("memit", {"null_space": {}}),
    "memit+anchor": ("memit", {"norm_anchor": {}}),
    "memit+anchor+preserve": ("memit", {"norm_anchor": {}, "preserve_earlier": 1.0}),
    "memit+preserve": ("memit", {"preserve_earlier": 1.0}),
    "memit+ngd+preserve": ("memit", NGD_PRESERVE),
    # The same, the second round only while a target is not yet the greedy answer (rounds_until_written).
    "memit+ngd+preserve+until": ("memit", {**NGD_PRESERVE, "rounds_until_written": True}),
    # The same, with the keys of a subject's last common word held in each solve (preserve_subject_words).
    "memit+ngd+preserve+until+words": ("memit", {**NGD_PRESERVE, "rounds_until_written": True,
                                                 "preserve_subject_words": 1.0}),
    # The same, the value steps taken in the output-Fisher metric (value_metric): δ that drifts less.
    "memit+ngd+preserve+until+words+fisher": ("memit", {**NGD_PRESERVE, "rounds_until_written": True,
                                                        "preserve_subject_words": 1.0, "value_metric": {}}),
    # The same, each value orthogonal to the mean direction of the earlier values (orthogonal_to_shared_value).
    "memit+ngd+preserve+until+words+orth": ("memit", {**NGD_PRESERVE, "rounds_until_written": True,
                                                      "preserve_subject_words": 1.0,
                                                      "orthogonal_to_shared_value": True}),
    # The same, each edit written at the least scale that still takes, times 1.1 (least_write).
    "memit+ngd+preserve+until+words+orth+least": ("memit", {**NGD_PRESERVE, "rounds_until_written": True,
                                                            "preserve_subject_words": 1.0,
                                                            "orthogonal_to_shared_value": True,
                                                            "least_write": {"headroom": 0.1}}),
    # The same, solved against the key covariance of the model as edited so far (running_covariance).
    "memit+ngd+preserve+until+words+orth+least+running": ("memit", {**NGD_PRESERVE, "rounds_until_written": True,
                                                                    "preserve_subject_words": 1.0,
                                                                    "orthogonal_to_shared_value": True,
                                                                    "least_write": {"headroom": 0.1},
                                                                    "running_covariance": {}}),
    # The same, the corpus mean key held in each solve (preserve_mean_key): less of one shift to every position.
    "memit+ngd+preserve+until+words+orth+mean": ("memit", {**NGD_PRESERVE, "rounds_until_written": True,
                                                           "preserve_subject_words": 1.0,
                                                           "orthogonal_to_shared_value": True,
                                                           "preserve_mean_key": 10.0}),
}


def run_variant(editor, cases, variant: str, batch_size: int, checkpoints: list[int], extra: dict,
                on_row=None, generated_args=None, state: Path | None = None, until: int | None = None,
                drift_rows: Path | None = None, refresh: int | None = None,
                lapsed_when: str = "not_greedy", consolidate: dict | None = None) -> list[dict]:
    """Edit `cases` in order, `batch_size` per apply(), measuring at each checkpoint. With `state`, the
    session (ledger, timings, rows) is saved at every checkpoint and a run finding the file continues from
    it; `until` stops after that checkpoint (a long run split into parts). With `drift_rows`, drift on the
    reference text is measured after every apply and appended there as a JSON line (edits so far, the
    batch's case ids, mean KL, top-1 agreement, KL per reference position): which edits move which
    positions. With `refresh`, `Editor.refresh(refresh, lapsed_when=lapsed_when)` runs after every apply.
    With `consolidate` ({"at": [edits, ...], and Editor.consolidate's settings}), the editor consolidates
    after those checkpoints' rows and a second row, `consolidated`, scores the result; later edits go on
    from it. The model is left unedited."""
    from suture.evaluation import score_cases
    from suture.evaluation.drift import measure_drift

    method, hparams = VARIANTS[variant]
    hparams = {**hparams, **extra.get(method, {})}
    rows, times, steps, passed, scales, applied, last = [], [], [], [], [], 0, 0
    refreshed = {"lapsed": 0, "rewritten": 0, "failed": 0, "held": 0}
    base_cache: dict = {}  # the unedited model's answers, kept across checkpoints
    run = {"variant": variant, "hparams": json.dumps(hparams, sort_keys=True), "batch_size": batch_size,
           "cases": [f"{c.id}|{c.text}|{c.target_new}" for c in cases]}
    if refresh is not None:  # only when set: sessions saved before the option still continue
        run["refresh"] = refresh if lapsed_when == "not_greedy" else [refresh, lapsed_when]
    consolidate = dict(consolidate or {})
    consolidate_at = set(consolidate.pop("at", []))
    if consolidate_at:
        run["consolidate"] = json.dumps({"at": sorted(consolidate_at), **consolidate}, sort_keys=True)
    if state is not None and state.is_file():
        saved = editor.restore_session(state)
        if saved["run"] != run:
            editor.reset()
            raise SystemExit(f"--state {state}: saved by another run (variant, hyperparameters, batch size or "
                             "records differ); give another path")
        rows, times, steps, applied, last = (json.loads(saved["rows"]), saved["times"], saved["steps"],
                                             saved["applied"], saved["applied"])
        passed = saved.get("passed", [None] * applied)  # sessions saved before verdicts were kept
        scales = saved.get("scales", [None] * applied)  # and before least_write
        refreshed = saved.get("refreshed", refreshed)
        pre_neighborhood = saved["pre_neighborhood"]
        print(f"continuing from {applied} edits ({state})", flush=True)
    else:
        pre_neighborhood = [c.neighborhood for c in score_cases(editor.handle, cases[: max(checkpoints)]).cases]
    while applied < max(checkpoints) and (until is None or applied < until):
        batch = cases[applied: applied + batch_size]
        started = time.perf_counter()
        result = editor.apply(batch, method=method, keep_failed=True, **hparams)
        if refresh is not None:
            report = editor.refresh(refresh, lapsed_when=lapsed_when)
            for name in refreshed:
                refreshed[name] += len(getattr(report, name))
        times += [(time.perf_counter() - started) / len(batch)] * len(batch)
        steps += [_most(result.details.get("value_steps"))] * len(batch)
        passed += [v.passed for v in result.verdicts] if result.verdicts else [None] * len(batch)
        scales += [_mean(_flat(result.details.get("write_scale")))] * len(batch)
        applied += len(batch)
        if drift_rows is not None:
            _append_drift(drift_rows, applied, batch, measure_drift(editor))
        if applied in checkpoints:
            window = times[last:applied]
            rows.append({"variant": variant, "edits": applied,
                         **_quality(editor, cases[:applied], pre_neighborhood[:applied]),
                         "seconds_per_edit": sum(times) / applied,
                         "seconds_per_edit_window": sum(window) / len(window),
                         "seconds_per_edit_window_median": statistics.median(window),
                         "value_steps_window_mean": _mean(steps[len(steps) - len(window):]),
                         # Written when made (its verdict at the time) against kept (efficacy now): an edit
                         # that never took and one a later edit undid are different failures.
                         "verdicts_passed_window": _mean(passed[last:applied]),
                         "verdicts_passed": _mean(passed),
                         # least_write: the mean scale the window's edits were written at (None: option off)
                         "write_scale_window_mean": _mean(scales[last:applied])})
            if refresh is not None:  # earlier requests found lapsed and written again, so far
                rows[-1].update({"refresh_window": refresh, "refresh_lapsed_when": lapsed_when,
                                 **{f"refresh_{k}": v for k, v in refreshed.items()},
                                 "ledger_entries": len(editor.ledger)})
            if generated_args is not None:
                judged = generated_sample(cases[:applied], generated_args.generated_sample)
                rows[-1].update(generated_row(editor, judged, generated_args, base_cache, edits=applied))
            print(json.dumps(rows[-1]), flush=True)
            if applied in consolidate_at:
                rows.append(_consolidated_row(editor, cases[:applied], pre_neighborhood[:applied], variant,
                                              consolidate, generated_args, base_cache))
                print(json.dumps(rows[-1]), flush=True)
            if on_row:
                on_row(rows)
            last = applied
            if state is not None:
                editor.save_session(state, extra={"run": run, "rows": json.dumps(rows), "times": times,
                                                  "steps": steps, "passed": passed, "scales": scales,
                                                  "refreshed": refreshed,
                                                  "applied": applied,
                                                  "pre_neighborhood": pre_neighborhood})
    editor.reset()
    return rows


def _quality(editor, cases: list, pre_neighborhood: list[float]) -> dict:
    """Efficacy / Paraphrase / Neighborhood over `cases`, drift and weight growth, as a checkpoint row has them."""
    from suture.evaluation import norm_growth, score_cases
    from suture.evaluation.drift import measure_drift

    scores = score_cases(editor.handle, cases)
    drift = measure_drift(editor)
    growth = norm_growth(editor)
    return {"efficacy": scores.efficacy, "paraphrase": scores.paraphrase, "neighborhood": scores.neighborhood,
            "neighborhood_pre": sum(pre_neighborhood) / len(pre_neighborhood), "drift_kl": drift.mean_kl,
            "top1_agreement": drift.top1_agreement,
            "norm_growth_max": max((g.growth for g in growth), default=0.0),
            "weight_change_max": max((g.relative_change or 0.0 for g in growth), default=0.0)}


def _consolidated_row(editor, cases: list, pre_neighborhood: list[float], variant: str, settings: dict,
                      generated_args, base_cache: dict) -> dict:
    """`Editor.consolidate(**settings)`, then the checkpoint's quality measured again."""
    started = time.perf_counter()
    report = editor.consolidate(**settings)
    row = {"variant": variant, "edits": len(cases), "consolidated": True, **_quality(editor, cases, pre_neighborhood),
           "consolidate_scale": report.scale, "consolidate_facts": report.facts,
           "consolidate_lapsed_before": report.lapsed_before, "consolidate_lapsed_after": report.lapsed_after,
           "consolidate_tried": report.tried, "consolidate_seconds": time.perf_counter() - started,
           "ledger_entries": len(editor.ledger)}
    if generated_args is not None:
        judged = generated_sample(cases, generated_args.generated_sample)
        row.update(generated_row(editor, judged, generated_args, base_cache, edits=len(cases),
                                 tag={"consolidated": True}))
    return row


def consolidate_problem(settings: dict, checkpoints: list[int]) -> str | None:
    """What is wrong with --consolidate's settings for these checkpoints, found before the run starts."""
    import inspect

    from suture.editor import Editor, InvalidInputError
    from suture.editor.consolidate import check_settings

    at = settings.get("at")
    if not isinstance(at, list) or not at or not all(isinstance(n, int) and n in checkpoints for n in at):
        return f'"at" must be a list of the checkpoints ({checkpoints}), got {at!r}'
    rest = {k: v for k, v in settings.items() if k != "at"}
    try:
        bound = inspect.signature(Editor.consolidate).bind(None, **rest)
    except TypeError as exc:
        return str(exc)
    bound.apply_defaults()
    try:
        check_settings(*(bound.arguments[k] for k in ("max_lapsed", "step", "min_scale", "lapsed_when")))
    except InvalidInputError as exc:
        return str(exc)
    return None


def _append_drift(path: Path, applied: int, batch: list, drift) -> None:
    row = {"edits": applied, "cases": [c.id for c in batch], "drift_kl": drift.mean_kl,
           "top1_agreement": drift.top1_agreement, "kl_per_position": [round(v, 5) for v in drift.kl_per_position]}
    with path.open("a") as out:
        out.write(json.dumps(row) + "\n")


def _most(found) -> int | None:
    """The largest number of value steps in an edit's details (nested per group and per chunk)."""
    if isinstance(found, list):
        inner = [_most(item) for item in found]
        return max((i for i in inner if i is not None), default=None)
    return found if isinstance(found, int) else None


def _flat(found) -> list[float]:
    """The numbers in a detail nested per group and per chunk."""
    if isinstance(found, list):
        return [x for item in found for x in _flat(item)]
    return [float(found)] if isinstance(found, int | float) else []


def _mean(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def generated_sample(cases: list, size: int | None) -> list:
    """At most `size` of `cases`, the same ones for the same list (seeded), in their order: generated
    evaluation costs seconds per case, too much for every edit at 1,000."""
    if size is None or len(cases) <= size:
        return cases
    return [cases[i] for i in sorted(random.Random(0).sample(range(len(cases)), size))]


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["efficacy", "paraphrase", "neighborhood", "drift_kl"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4))
    for axis, metric in zip(axes, metrics):
        def series_of(r: dict) -> tuple:  # a consolidated row is its own point, not a step in the line
            return r["variant"], r.get("batch_size", 1), bool(r.get("consolidated"))

        for series in dict.fromkeys(map(series_of, rows)):
            points = [r for r in rows if series_of(r) == series]
            label = series[0] if series[1] == 1 else f"{series[0]}, batches of {series[1]}"
            label += ", consolidated" if series[2] else ""
            axis.plot([p["edits"] for p in points], [p[metric] for p in points], marker="o", label=label)
        axis.set_xscale("log")
        axis.set_title(metric)
        axis.set_xlabel("edits")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; empty: only plot --include")
    parser.add_argument("--checkpoints", default="10,50,100,250,500")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--offset", type=int, default=0, help="first record (records 500-599: issue 13's range)")
    parser.add_argument("--hparams", type=json_object, default={},
                        help='per-method overrides, e.g. {"memit": {"layers": [3, 4]}}')
    parser.add_argument("--out")
    parser.add_argument("--state", type=Path,
                        help="session file saved at every checkpoint; a run that finds it continues from it "
                             "(one variant)")
    parser.add_argument("--until", type=int, help="stop after this checkpoint (with --state: one part of a long run)")
    parser.add_argument("--drift-rows", type=Path,
                        help="append drift on the reference text after every apply here, one JSON line each")
    parser.add_argument("--refresh", type=int, metavar="W",
                        help="after each apply, check W earlier requests and write again those later edits undid")
    parser.add_argument("--lapsed-when", choices=["not_greedy", "old_preferred"], default="not_greedy",
                        help="with --refresh: what counts as undone (Editor.refresh's lapsed_when)")
    parser.add_argument("--consolidate", type=json_object,
                        help='after the checkpoints in "at", Editor.consolidate with the other keys and a second '
                             'row scoring it, e.g. {"at": [1000], "max_lapsed": 0.01}')
    parser.add_argument("--plot")
    parser.add_argument("--include", action="append", default=[],
                        help="rows (--out JSON) of earlier runs to plot with this one; repeatable")
    add_generated_options(parser)
    parser.add_argument("--generated-sample", type=int,
                        help="with --generated: judge at most this many of the edits so far (seeded sample)")
    args = parser.parse_args(argv)
    variants = args.variants.split(",") if args.variants else []
    methods = {method for method, _ in VARIANTS.values()}
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"--variants: unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    for method, overrides in args.hparams.items():  # keyed by method: a flat override would be ignored
        if method not in methods or not isinstance(overrides, dict):
            parser.error(f"--hparams: {method!r} is not one of the variants' methods ({', '.join(sorted(methods))}) "
                         "with an object of overrides, e.g. {\"memit\": {\"layers\": [3, 4]}}")
    earlier = [row for path in args.include for row in json.loads(Path(path).read_text())]
    if not args.variants:  # plot earlier runs only
        plot(earlier, args.plot)
        return 0
    if not ready(args):
        return 2
    from suture.evaluation import load_counterfact

    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    editor = load_editor(args)
    cases = load_counterfact(args.data, limit=max(checkpoints), offset=args.offset)
    rows: list[dict] = []

    done: list[dict] = []  # rows of the variants finished

    def keep(variant_rows: list[dict]) -> None:  # written as they come: a stopped run keeps what it measured
        rows[:] = done + [{**row, "batch_size": args.batch_size} for row in variant_rows]
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))

    if args.state is not None and len(variants) != 1:
        parser.error("--state: one variant per session file")
    if args.consolidate is not None:
        problem = consolidate_problem(args.consolidate, checkpoints)
        if problem:
            parser.error(f"--consolidate: {problem}")
        if args.refresh is not None:  # the same test of "lapsed" as the run's refresh, unless given
            args.consolidate.setdefault("lapsed_when", args.lapsed_when)
    for variant in variants:
        variant_rows = run_variant(editor, cases, variant, args.batch_size, checkpoints, args.hparams,
                                   on_row=keep, generated_args=args if args.generated else None, state=args.state,
                                   until=args.until, drift_rows=args.drift_rows, refresh=args.refresh,
                                   lapsed_when=args.lapsed_when, consolidate=args.consolidate)
        done += [{**row, "batch_size": args.batch_size} for row in variant_rows]
    if args.plot:
        plot(earlier + rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
