"""Device and dtype selection: CUDA when present, CPU otherwise."""

from __future__ import annotations

import torch

from suture.editor.errors import SutureError

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None and str(device) != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        # Half precision on CPU is slow and loses the small differences edits are made of.
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise SutureError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}") from None
