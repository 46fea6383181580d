"""Declarative maps from abstract edit sites to the module paths of one model family.

A site map says where things are, never how to edit them: methods read the map, so adding a
family is one small file and no method changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from suture.editor.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class HeadLayout:
    n_heads: int
    head_dim: int
    n_kv_heads: int

    @property
    def group_size(self) -> int:
        """Query heads sharing one key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads


@dataclass(frozen=True)
class SiteMap:
    family: str
    model_types: tuple[str, ...]
    layers: str  # path of the ModuleList of blocks
    mlp_out: str  # MLP down projection, relative to a block: input = key, output = value
    attn_out: str  # attention output projection, relative to a block: input = concatenated heads
    final_norm: str
    unembed: str
    n_heads_attr: str = "num_attention_heads"
    n_kv_heads_attr: str | None = "num_key_value_heads"
    head_dim_attr: str | None = "head_dim"
    weights_transposed: bool = False  # GPT-2's Conv1D stores weight as (in, out)
    logit_softcap_attr: str | None = None  # config field holding a final logit soft cap, if any
    # False where the MLP output is normalized before it joins the residual stream (Gemma 2/3's
    # post-feedforward norm): then layer outputs do not add up, which multi-layer MEMIT relies on.
    mlp_out_adds_to_residual: bool = True
    # Config flag with which stock transformers builds the attention projections (attn_out included) with
    # biases; None where the family's attention output projection can never have one in stock transformers
    # (then a checkpoint with a bias created there is refused, see editor/bias_params.py).
    attn_bias_config_attr: str | None = None

    def layer_modules(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers)

    def check_model(self, model: nn.Module) -> None:
        """Raise UnsupportedArchitectureError naming the model class when a path this map claims is missing
        (a class the model_type also names but laid out differently, e.g. a text-only head on a
        multimodal config)."""
        for role, path in (("layers", self.layers), ("final_norm", self.final_norm), ("unembed", self.unembed)):
            try:
                found = model.get_submodule(path)
            except AttributeError:
                found = None
            if found is None or (role == "layers" and not isinstance(found, nn.ModuleList)):
                raise UnsupportedArchitectureError(
                    getattr(model.config, "model_type", "?"), [],
                    detail=f"{type(model).__name__} has no {role} at {path!r}, where the {self.family!r} site "
                           f"map for this model_type expects it; this model class cannot be edited")

    def n_layers(self, model: nn.Module) -> int:
        return len(self.layer_modules(model))

    def mlp_out_path(self, layer: int) -> str:
        return f"{self.layers}.{layer}.{self.mlp_out}"

    def attn_out_path(self, layer: int) -> str:
        return f"{self.layers}.{layer}.{self.attn_out}"

    def head_layout(self, config) -> HeadLayout:
        config = text_config(config)
        n_heads = getattr(config, self.n_heads_attr)
        n_kv = getattr(config, self.n_kv_heads_attr, None) if self.n_kv_heads_attr else None
        head_dim = getattr(config, self.head_dim_attr, None) if self.head_dim_attr else None
        return HeadLayout(n_heads=n_heads, head_dim=head_dim or config.hidden_size // n_heads,
                          n_kv_heads=n_kv or n_heads)

    def logit_softcap(self, config) -> float | None:
        config = text_config(config)
        return getattr(config, self.logit_softcap_attr, None) if self.logit_softcap_attr else None


def text_config(config):
    """The config of the text decoder: `config` itself, or its `text_config` for multimodal models."""
    get = getattr(config, "get_text_config", None)
    return get() if get is not None else config


def linear_weight_as_out_in(weight, transposed: bool):
    """View a projection weight as (out_features, in_features) whatever its storage."""
    return weight.t() if transposed else weight
