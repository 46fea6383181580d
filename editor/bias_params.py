"""Checkpoints of models that carry created parameters (a bias added to a bias-free projection), written so
that stock `AutoModelForCausalLM.from_pretrained` rebuilds the same model.

`WeightBook` may add a bias to a projection that has none (head steering writes one into Llama's attention
output projection). `save_pretrained` would write that tensor, but `from_pretrained` builds every module from the
config: without a bias in the config's architecture it drops the tensor as an unexpected key and the reloaded
model computes something else. So before a save:

1. The family's site map names the config flag with which stock transformers builds attention biases
   (`SiteMap.attn_bias_config_attr`, e.g. Llama's and Gemma's `attention_bias`, GPT-NeoX's `attention_bias`).
2. The model class is instantiated on the meta device (no memory) from a copy of the config with that flag on,
   and its state_dict keys are compared with the live model's: every created parameter must be one the flagged
   model expects, and the flag must not drop any existing key; every other key the flag adds (the q/k/v
   biases next to a created o_proj bias) is written as zeros, which changes nothing the model computes.
3. While `save_pretrained` runs, the flag is set on the live config and the zero parameters are registered on
   their modules; both are undone afterwards, whatever happens.

Families whose stock code has no such flag for the module (Mistral, Qwen2 and GPT-J hard-code `bias=False` on
the attention output projection; Qwen2's `bias=True` covers only q/k/v) get a SutureError naming the created
parameters before anything is written. The decision is made from the state_dict comparison, never from a model
name: a family is only as "supported" as what its stock class actually builds.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from suture.editor.errors import SutureError
from suture.editor.sites import SiteMap
from suture.editor.sites.base import text_config

_REMEDY = ("revert the edits that created them (head-steer, head-mean-patch), or save the ledger "
           "(Editor.ledger_json) and replay it on the base model instead")


@dataclass
class StockLayout:
    """What a save must change so that stock transformers loads the created parameters."""

    config_attr: str | None  # config flag to set True while saving (None: nothing to set)
    zeros: dict[str, tuple[int, ...]] = field(default_factory=dict)  # keys the flag adds, written as zeros
    created: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"config": {self.config_attr: True} if self.config_attr else {}, "created": list(self.created),
                "zero_filled": sorted(self.zeros)}


def _expected_shapes(model: nn.Module, config) -> dict[str, tuple[int, ...]]:
    """state_dict keys and shapes of `type(model)` built by stock code from `config`, on the meta device."""
    try:
        with torch.device("meta"):
            skeleton = type(model)(config)
    except Exception as exc:  # any failure means: cannot show that the checkpoint loads
        raise SutureError(f"cannot check that stock transformers loads the created parameters: building "
                          f"{type(model).__name__} from the adapted config failed ({exc})") from exc
    return {key: tuple(tensor.shape) for key, tensor in skeleton.state_dict().items()}


def stock_layout(model: nn.Module, sites: SiteMap, created: list[str]) -> StockLayout | None:
    """How to save `model` with its `created` parameters loadable by stock transformers; None if nothing to do.
    Raises SutureError (naming the parameters) when the family's stock code cannot hold them."""
    if not created:
        return None
    attr = sites.attn_bias_config_attr
    config = copy.deepcopy(model.config)
    if attr is not None:
        text = text_config(config)
        if not hasattr(text, attr):
            raise SutureError(f"cannot save: the config ({type(text).__name__}) has no field {attr!r}, which the "
                              f"{sites.family} site map names to make stock transformers build attention biases")
        setattr(text, attr, True)
    expected = _expected_shapes(model, config)
    current = model.state_dict()
    unloadable = [key for key in created if key not in expected]
    if unloadable:
        how = (f"even with config.{attr}=True" if attr else
               "(its site map names no config flag that adds attention biases)")
        raise SutureError(
            f"cannot save a checkpoint stock transformers would load: {model.config.model_type} models have no "
            f"parameter {', '.join(unloadable)} in stock transformers {how}, so from_pretrained would drop the "
            f"bias the edits created and compute something else; {_REMEDY}")
    dropped = [key for key in current if key not in expected]
    if dropped:
        raise SutureError(f"cannot save: setting config.{attr}=True would drop parameters {', '.join(dropped)}")
    wrong = [key for key in created if tuple(current[key].shape) != expected[key]]
    if wrong:
        raise SutureError(f"cannot save: created parameters {', '.join(wrong)} do not have the shapes stock "
                          f"transformers expects ({', '.join(str(expected[k]) for k in wrong)})")
    zeros = {key: shape for key, shape in expected.items() if key not in current}
    for key in zeros:
        module_path, _, name = key.rpartition(".")
        try:
            module = model.get_submodule(module_path)
        except AttributeError:
            raise SutureError(f"cannot save: config.{attr}=True adds {key}, but the model has no module "
                              f"{module_path!r} to hold it") from None
        if getattr(module, name, None) is not None:
            raise SutureError(f"cannot save: config.{attr}=True adds {key}, which is already an attribute")
    changes_config = attr is not None and getattr(text_config(model.config), attr) is not True
    return StockLayout(config_attr=attr if changes_config else None, zeros=zeros, created=list(created))


@contextmanager
def loadable_by_stock(model: nn.Module, layout: StockLayout | None) -> Iterator[None]:
    """Inside the block the model and its config are as stock transformers would build them from the saved
    config: the flag set, the extra parameters present as zeros. Everything is put back on exit."""
    if layout is None:
        yield
        return
    text = text_config(model.config)
    old_flag = getattr(text, layout.config_attr) if layout.config_attr else None
    added: list[tuple[nn.Module, str, bool]] = []
    try:
        if layout.config_attr:
            setattr(text, layout.config_attr, True)
        for key, shape in layout.zeros.items():
            module_path, _, name = key.rpartition(".")
            module = model.get_submodule(module_path)
            like = getattr(module, "weight", None)
            dtype = like.dtype if isinstance(like, torch.Tensor) else torch.float32
            device = like.device if isinstance(like, torch.Tensor) else "cpu"
            added.append((module, name, name in module._parameters))
            module.register_parameter(name, nn.Parameter(torch.zeros(shape, dtype=dtype, device=device),
                                                         requires_grad=False))
        yield
    finally:
        for module, name, had_slot in reversed(added):
            if had_slot:
                module.register_parameter(name, None)
            else:
                module._parameters.pop(name, None)
        if layout.config_attr:
            setattr(text, layout.config_attr, old_flag)
