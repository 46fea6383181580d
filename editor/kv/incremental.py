"""Passing a KV cache into a model's forward, across transformers 5.x.

Recent 5.x releases take the cache as `cache=` and return it as `output.cache`; earlier ones, and the
deprecated spelling until its removal, use `past_key_values`. Decided from the forward's signature, once per
model class, so neither spelling warns or breaks when transformers moves on.
"""

from __future__ import annotations

import inspect
from functools import cache as memoize

import torch


@memoize
def _cache_keyword(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def with_cache(model: torch.nn.Module, kv_cache) -> dict:
    """Forward keyword arguments that hand `kv_cache` to `model` and ask for it to be extended."""
    return {_cache_keyword(type(model)): kv_cache, "use_cache": True}


def cache_of(output) -> object:
    """The KV cache a forward returned."""
    kv_cache = getattr(output, "cache", None)
    return kv_cache if kv_cache is not None else output.past_key_values
