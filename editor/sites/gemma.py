from suture.editor.sites.base import SiteMap
from suture.editor.sites.registry import register_site_map

# Gemma 1-3 share the layout; Gemma 2 soft-caps its final logits, Gemma 3 leaves the field unset.
register_site_map(SiteMap(
    family="gemma", model_types=("gemma", "gemma2", "gemma3_text", "gemma3"),
    layers="model.layers", mlp_out="mlp.down_proj", attn_out="self_attn.o_proj",
    attn_bias_config_attr="attention_bias",  # q/k/v/o biases (the flag adds all of them)
    final_norm="model.norm", unembed="lm_head",
    logit_softcap_attr="final_logit_softcapping",
    mlp_out_adds_to_residual=False,  # Gemma 2/3 normalize the MLP output (post_feedforward_layernorm)
))
