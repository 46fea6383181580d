"""GGUF files loaded through transformers and rebuilt as plain (dequantized) checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def load_gguf(path: Path, dtype: torch.dtype = torch.float32):
    """A dequantized model and its tokenizer from one GGUF file.

    transformers refuses to `save_pretrained` a GGUF-loaded model, so the model is rebuilt from its
    config without `quantization_config` and the dequantized state dict is loaded into it.
    """
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
