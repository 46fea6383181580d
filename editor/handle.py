"""A loaded model together with what suture needs to know about it."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from suture.editor.device import pick_device, pick_dtype
from suture.editor.errors import ModelNotFoundError
from suture.editor.fingerprint import weights_fingerprint
from suture.editor.sites import SiteMap, site_map_for


def own_tokenizer(tokenizer):
    """A copy of `tokenizer` set up as suture reads it (a pad token, right padding); the caller's object
    is never changed, so its own batched generation keeps its padding side and pad token."""
    mine = copy.deepcopy(tokenizer)
    if getattr(mine, "pad_token_id", None) is None:
        mine.pad_token = mine.eos_token
    mine.padding_side = "right"
    return mine


@dataclass
class ModelHandle:
    """The model suture edits (its weights change with each edit; it is put in eval mode with gradients
    off) and suture's own copy of the tokenizer (`own_tokenizer`); the model's config is not changed."""

    model: nn.Module
    tokenizer: object
    ref: str
    sites: SiteMap = field(init=False)

    def __post_init__(self) -> None:
        self.sites = site_map_for(self.model.config)
        self.sites.check_model(self.model)
        self.model.eval()
        self.model.requires_grad_(False)
        self.tokenizer = own_tokenizer(self.tokenizer)
        _ = self.base_fingerprint  # now, while the weights are still the base weights

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def n_layers(self) -> int:
        return self.sites.n_layers(self.model)

    @cached_property
    def base_fingerprint(self) -> str:
        """sha256 of the weights as loaded, before any edit (computed when the handle is made)."""
        return weights_fingerprint(self.model)

    @cached_property
    def cache_key(self) -> str:
        """Key of everything computed from this base model: its weights and its config."""
        config = self.model.config.to_json_string(use_diff=False)
        return hashlib.sha256(f"{self.base_fingerprint}|{config}".encode()).hexdigest()


def load_model(ref: str | Path, device: str | None = None, dtype: str | torch.dtype | None = None) -> ModelHandle:
    """Load a local Hugging Face directory, a .gguf file, or a zoo name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from suture.editor.zoo import ZOO, resolve_zoo

    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    path = Path(str(ref)).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        from suture.editor.gguf import load_gguf

        model, tokenizer = load_gguf(path.resolve(), torch_dtype)
    else:
        if not path.is_dir():
            if str(ref) not in ZOO:
                raise ModelNotFoundError(
                    f"model {str(ref)!r} is not a local directory, a .gguf file, or a zoo name "
                    f"({', '.join(sorted(ZOO))})")
            path = resolve_zoo(str(ref))
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} has no config.json: not a Hugging Face model directory")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    model.to(torch_device)
    return ModelHandle(model=model, tokenizer=tokenizer, ref=str(ref))
