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
    """The torch dtype of `dtype` (a name or a dtype); None or "auto" is float32.

    Raises SutureError for an unknown name."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        # float32 on every device: bf16 weights round away part of the small changes edits are made of. On an
        # H200, ROME single edits in bf16 against float32 on the CPU (records 500-519): generated locality 0.665 against
        # 0.825, paraphrase 0.575 against 0.675 (BENCHMARKS.md, "On a GPU"). bf16 stays a choice for models
        # too large for float32.
        return torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise SutureError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}") from None
