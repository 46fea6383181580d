from suture.editor.sites.base import SiteMap
from suture.editor.sites.registry import register_site_map

# Stock transformers builds this family's attention output projection without a bias, whatever the config.
register_site_map(SiteMap(
    family="mistral", model_types=("mistral",),
    layers="model.layers", mlp_out="mlp.down_proj", attn_out="self_attn.o_proj",
    final_norm="model.norm", unembed="lm_head",
))
