"""Fingerprints that say what a model's weights were, for manifests and cache keys."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn


def checkpoint_sha256(directory: Path) -> str:
    """sha256 over the checkpoint's safetensors files, in name order."""
    from suture.editor.zoo import sha256_file

    files = sorted(directory.glob("*.safetensors"))
    if len(files) == 1:
        return sha256_file(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of the in-memory weights (names, dtypes, shapes and bytes), independent of file layout."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    for name, tensor in sorted(model.state_dict().items()):
        if tensor.data_ptr() in seen:  # tied weights count once
            continue
        seen.add(tensor.data_ptr())
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
