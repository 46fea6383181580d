import pytest
import torch

from suture.editor.device import pick_device, pick_dtype
from suture.editor.errors import SutureError


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_auto_dtype_is_float32_on_every_device(device):
    """bf16 rounds away part of an edit (BENCHMARKS.md, "On a GPU"), so it is never chosen unasked."""
    assert pick_dtype(None, torch.device(device)) == torch.float32
    assert pick_dtype("auto", torch.device(device)) == torch.float32


def test_named_dtypes_and_an_unknown_name():
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert pick_dtype(torch.float16, torch.device("cpu")) == torch.float16
    with pytest.raises(SutureError, match="'int8' is not one of"):
        pick_dtype("int8", torch.device("cpu"))


def test_explicit_device_is_kept():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in {"cpu", "cuda"}
