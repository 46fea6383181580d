from suture.editor.sites.base import SiteMap
from suture.editor.sites.registry import register_site_map

register_site_map(SiteMap(
    family="llama", model_types=("llama",),
    layers="model.layers", mlp_out="mlp.down_proj", attn_out="self_attn.o_proj",
    attn_bias_config_attr="attention_bias",  # q/k/v/o biases (the flag adds all of them)
    final_norm="model.norm", unembed="lm_head",
))
