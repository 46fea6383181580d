"""What every benchmark script shares: the data/model/threads options and the start-up checks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="e.g. ../shared/data/counterfact_rome_format_1000.json")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", help="float32, bfloat16 or float16 (default: float32)")
    return parser


def add_record_range(parser: argparse.ArgumentParser, n: int, offset: int = 0) -> None:
    """--n records of the data file from record --offset (tune on records a reported run leaves out)."""
    parser.add_argument("--n", type=int, default=n, help=f"records (default {n})")
    parser.add_argument("--offset", type=int, default=offset, help=f"first record (default {offset})")


def json_object(text: str) -> dict:
    """argparse type of a JSON-object option: the parsed dict, or a usage error that says what is wrong."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. {\"layers\": [3]}")
    return value


def add_method_options(parser: argparse.ArgumentParser, method: str) -> None:
    """--method (a registered method's name) and --hparams (its hyperparameter overrides, JSON, as a dict)."""
    parser.add_argument("--method", default=method, help=f"a registered method (default {method})")
    parser.add_argument("--hparams", type=json_object, default={},
                        help="JSON overrides of the method's hyperparameters")


def load_editor(args: argparse.Namespace):
    """The editor of `--model` on `--device` in `--dtype`."""
    from suture.editor import Editor

    return Editor.load(args.model, device=args.device, dtype=args.dtype)


def ready(args: argparse.Namespace) -> bool:
    """The data file exists (the benchmark data lives in ../shared/data); torch uses `--threads`."""
    if not Path(args.data).is_file():
        print(f"data file {args.data} not found (the benchmark data lives in ../shared/data)", file=sys.stderr)
        return False
    import torch

    torch.set_num_threads(args.threads)
    return True


def add_generated_options(parser: argparse.ArgumentParser) -> None:
    """--generated (judge greedy answers too, evaluation/generated.py) and --answers (their JSONL)."""
    parser.add_argument("--generated", action="store_true",
                        help="also score greedy generations, judged (beside the teacher-forced scores)")
    parser.add_argument("--generation", type=json_object, default={}, help="JSON overrides of GenerationOptions")
    parser.add_argument("--answers", help="with --generated: every generated answer, JSONL")


def generated_row(editor, cases, args, base_cache: dict | None = None, edits: int | None = None,
                  tag: dict | None = None) -> dict:
    """Generated scores of `cases` on the editor's current weights, as one flat dict of the benchmark's
    row (the answers go to --answers, if given, tagged with `edits`, how many edits the model holds, and
    with `tag`'s fields: which of several measurements at that count they belong to)."""
    import json

    from suture.evaluation.generated import GenerationOptions, evaluate_generated

    options = GenerationOptions(**{"generation_prompts": 1, **args.generation})
    scores = evaluate_generated(editor, cases, options, base_cache=base_cache)
    if args.answers:
        with Path(args.answers).open("a") as sink:
            for case in scores.cases:
                sink.write(json.dumps({"edits": edits or len(cases), **(tag or {}), **case.model_dump()}) + "\n")
    fluency = scores.fluency
    return {"gen_efficacy": scores.efficacy, "gen_paraphrase": scores.paraphrase, "gen_chat": scores.chat,
            "gen_generation_prompts": scores.generation_prompts, "gen_locality": scores.locality,
            "gen_subject_kept": scores.subject_kept,
            "gen_fluency_ratio": fluency.ratio if fluency else None,
            "gen_chat_fluency_ratio": fluency.chat_ratio if fluency else None,
            "gen_seconds_per_case": scores.seconds_per_case, "gen_generations": scores.generations,
            "gen_cases": len(cases)}


def session_cases(data: str, saved: dict, offset: int, after: int = 0) -> list:
    """The records a `sequential.py --state` session edited (and the `after` that follow them), loaded from
    `data` at `offset`; SystemExit when they are not the session's own (another file or --offset)."""
    from suture.evaluation import load_counterfact

    applied = saved["applied"]
    cases = load_counterfact(data, limit=applied + after, offset=offset)
    recorded = saved["run"]["cases"][:applied]
    if [f"{c.id}|{c.text}|{c.target_new}" for c in cases[:applied]] != recorded:
        raise SystemExit(f"the session's {applied} records are not records {offset}-{offset + applied - 1} of "
                         f"{data}: give the --data and --offset its run was given")
    return cases
