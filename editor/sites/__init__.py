"""Architecture site maps, one small file per model family."""

from editor.sites import gemma, gpt2, gpt_neox, gptj, llama, mistral, qwen2  # noqa: F401  (register)
from editor.sites.base import HeadLayout, SiteMap, linear_weight_as_out_in
from editor.sites.registry import register_site_map, site_map_for, supported_model_types

__all__ = ["HeadLayout", "SiteMap", "linear_weight_as_out_in", "register_site_map", "site_map_for",
           "supported_model_types"]
