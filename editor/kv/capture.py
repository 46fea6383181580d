"""Hooks that read or change one module's input/output, and stop a forward pass early."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import torch
from torch import nn


class StopForward(Exception):
    """Raised from a hook once everything needed has been captured."""


@contextmanager
def hooks(*handles) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def capture_input(module: nn.Module, sink: list, stop: bool = False):
    """Forward pre-hook storing the module's first positional input; optionally stop the pass."""

    def hook(_module, args):
        sink.append(args[0])
        if stop:
            raise StopForward

    return module.register_forward_pre_hook(hook)


def capture_output(module: nn.Module, sink: list, stop: bool = False):
    def hook(_module, _args, output):
        sink.append(output[0] if isinstance(output, tuple) else output)
        if stop:
            raise StopForward

    return module.register_forward_hook(hook)


def edit_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]):
    """Forward hook replacing the module's output tensor by fn(output)."""

    def hook(_module, _args, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return module.register_forward_hook(hook)


def run_until_stopped(model: nn.Module, **inputs) -> None:
    with suppress(StopForward):
        model(**inputs, use_cache=False)
