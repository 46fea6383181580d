from suture.editor.sites.base import SiteMap
from suture.editor.sites.registry import register_site_map

register_site_map(SiteMap(
    family="gpt2", model_types=("gpt2",),
    layers="transformer.h", mlp_out="mlp.c_proj", attn_out="attn.c_proj",
    final_norm="transformer.ln_f", unembed="lm_head",
    n_heads_attr="n_head", n_kv_heads_attr=None, head_dim_attr=None,
    weights_transposed=True,
))
