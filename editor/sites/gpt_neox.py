from suture.editor.sites.base import SiteMap
from suture.editor.sites.registry import register_site_map

register_site_map(SiteMap(
    family="gpt_neox", model_types=("gpt_neox",),
    layers="gpt_neox.layers", mlp_out="mlp.dense_4h_to_h", attn_out="attention.dense",
    attn_bias_config_attr="attention_bias",  # q/k/v/o biases (the flag adds all of them)
    final_norm="gpt_neox.final_layer_norm", unembed="lm_head",
    n_kv_heads_attr=None, head_dim_attr=None,
))
