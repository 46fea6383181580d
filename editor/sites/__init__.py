"""Architecture site maps, one small file per model family."""

from suture.editor.sites import gemma, gpt2, gpt_neox, gptj, llama, mistral, qwen2  # noqa: F401  (register)
from suture.editor.sites.base import HeadLayout, SiteMap, linear_weight_as_out_in
from suture.editor.sites.registry import (
    register_site_map,
    site_map_for,
    site_map_load_errors,
    supported_model_types,
)

__all__ = ["HeadLayout", "SiteMap", "linear_weight_as_out_in", "register_site_map", "site_map_for",
           "site_map_load_errors", "supported_model_types"]
