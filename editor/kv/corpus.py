"""Text corpora for key statistics: sampled from the model itself (works offline), or the user's own."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from suture.editor.errors import SutureError
from suture.editor.handle import ModelHandle
from suture.editor.jsonl import iter_jsonl
from suture.editor.paths import cache_dir
from suture.editor.progress import check_cancelled, generation_stoppers

# Varied openings so that sampled text covers narrative, encyclopedic and conversational registers.
SEEDS = ("The", "In", "A", "It", "This", "When", "He", "She", "We", "There", "According to", "After",
         "Many", "One", "As", "On", "For", "Although", "Today", "History")

# Names the sampler in the corpus cache key: text sampled by an earlier sampler (other batches, so other
# random draws) is not reused for a spec it no longer matches.
SAMPLER = "b256"


class CorpusSpec(BaseModel):
    """Where statistics text comes from: "model" (sampled from the base model) or a .txt/.jsonl/.json path."""

    model_config = ConfigDict(extra="forbid")

    source: str = "model"
    n_samples: int = Field(1000, ge=1)
    max_tokens: int = Field(128, ge=8)
    seed: int = 0


def corpus_fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def read_text_file(path: Path) -> list[str]:
    """Paragraphs of a .txt file, `text` fields of JSONL/JSON records, or a JSON list of strings."""
    if not path.is_file():
        raise SutureError(f"corpus file {path} does not exist")
    if path.suffix == ".jsonl":
        texts = []
        for number, record in iter_jsonl(path):
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise SutureError(f"{path}:{number}: field 'text' missing or not a string")
            texts.append(record["text"])
        return texts
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SutureError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SutureError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
        if not isinstance(data, list):
            raise SutureError(f"{path}: expected a JSON list of strings or of objects with 'text'")
        texts = []
        for i, item in enumerate(data):
            text = item.get("text") if isinstance(item, dict) else item
            if not isinstance(text, str):
                raise SutureError(f"{path}: item {i}: expected a string or an object with a string field 'text'")
            texts.append(text)
        return texts
    return [p.strip() for p in raw.split("\n\n") if p.strip()]


@torch.no_grad()
def sample_from_model(handle: ModelHandle, n: int, max_tokens: int, seed: int, batch_size: int = 256) -> list[str]:
    """`n` texts of up to `max_tokens` new tokens sampled from the model (top-p 0.95, temperature 1) after
    varied one-word openings. Batches are large because a decoding step costs little more for 256 rows
    than for 50 on a CPU (BENCHMARKS.md, "Key statistics"); a batch ends once every row has ended its text."""
    tok = handle.tokenizer
    texts: list[str] = []
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for start in tqdm(range(0, n, batch_size), desc="sampling statistics corpus", leave=False):
            check_cancelled()
            seeds = [SEEDS[(start + i) % len(SEEDS)] for i in range(min(batch_size, n - start))]
            enc = tok(seeds, return_tensors="pt", padding=True, padding_side="left").to(handle.device)
            out = handle.model.generate(**enc, do_sample=True, top_p=0.95, temperature=1.0,
                                        max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id,
                                        stopping_criteria=generation_stoppers() or None)
            texts += [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]
    finally:
        torch.random.set_rng_state(state)
    return texts


def load_corpus(handle: ModelHandle, spec: CorpusSpec) -> list[str]:
    """The corpus texts for `spec`; model-sampled text is generated once and cached."""
    if spec.source != "model":
        texts = read_text_file(Path(spec.source).expanduser())
        if not texts:
            raise SutureError(f"corpus {spec.source} holds no text")
        return texts[: spec.n_samples]
    name = f"{handle.cache_key[:16]}-{SAMPLER}-n{spec.n_samples}-t{spec.max_tokens}-s{spec.seed}.json"
    path = cache_dir("corpora") / name
    if path.is_file():
        return json.loads(path.read_text())
    texts = sample_from_model(handle, spec.n_samples, spec.max_tokens, spec.seed)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # a run killed mid-write leaves no truncated cache
    tmp.write_text(json.dumps(texts))
    tmp.replace(path)
    return texts
