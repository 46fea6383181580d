from suture.editor.sites.base import SiteMap
from suture.editor.sites.registry import register_site_map

# Gemma 1-3 share the block layout: q/k/v/o biases come from one flag, Gemma 2 soft-caps its final logits
# (Gemma 3 leaves the field unset). They differ in what multi-layer MEMIT relies on and in where the
# text layers sit.
_SHARED = dict(
    family="gemma", mlp_out="mlp.down_proj", attn_out="self_attn.o_proj", unembed="lm_head",
    attn_bias_config_attr="attention_bias", logit_softcap_attr="final_logit_softcapping",
)

# Gemma 1 adds the MLP output to the residual stream as it is.
register_site_map(SiteMap(model_types=("gemma",), layers="model.layers", final_norm="model.norm", **_SHARED))

# Gemma 2 and 3 normalize the MLP output (post_feedforward_layernorm) before it joins the residual stream.
register_site_map(SiteMap(model_types=("gemma2", "gemma3_text"), layers="model.layers", final_norm="model.norm",
                          mlp_out_adds_to_residual=False, **_SHARED))

# Multimodal Gemma 3 (Gemma3ForConditionalGeneration): the text decoder is the language model inside
# `model`; the vision tower is never edited. Its config keeps the text fields under `text_config`.
register_site_map(SiteMap(model_types=("gemma3",), layers="model.language_model.layers",
                          final_norm="model.language_model.norm", mlp_out_adds_to_residual=False, **_SHARED))
