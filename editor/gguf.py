"""GGUF files loaded through transformers and rebuilt as plain (dequantized) checkpoints."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def load_gguf(path: Path, dtype: torch.dtype = torch.float32):
    """A dequantized model and its tokenizer from one GGUF file.

    transformers refuses to `save_pretrained` a GGUF-loaded model, so the model is rebuilt from its
    config without `quantization_config` and the dequantized state dict is loaded into it.
    """
    with _gguf_parsed_once():
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items()
                                     if k not in ("quantization_config", "_name_or_path")})
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    model.eval()
    return model, tokenizer


def convert_gguf_to_checkpoint(path: Path, out: Path) -> str:
    """Write a safetensors checkpoint of a GGUF model; returns the sha256 of its weight file(s)."""
    from suture.editor.fingerprint import checkpoint_sha256

    model, tokenizer = load_gguf(path)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return checkpoint_sha256(out)


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Memoize gguf's file parser and tensor-name map while transformers loads one file.

    transformers parses the whole GGUF metadata once per object it builds (config, model, tokenizer: a
    49k-token vocabulary each time) and rebuilds gguf's tensor-name map once per submodule (~400 times);
    that was most of a SmolLM2 conversion (about 45 s). Both are pure functions of their arguments and
    transformers imports them from `gguf` at call time, so the cached versions are seen there.
    """
    import gguf

    original_reader, original_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], object] = {}

    def reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_name_map
