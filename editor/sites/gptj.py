from suture.editor.sites.base import SiteMap
from suture.editor.sites.registry import register_site_map

# Stock transformers builds this family's attention output projection without a bias, whatever the config.
register_site_map(SiteMap(
    family="gptj", model_types=("gptj",),
    layers="transformer.h", mlp_out="mlp.fc_out", attn_out="attn.out_proj",
    final_norm="transformer.ln_f", unembed="lm_head",
    n_heads_attr="n_head", n_kv_heads_attr=None, head_dim_attr=None,
))
