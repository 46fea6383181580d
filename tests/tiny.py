"""Tiny random-weight models of every supported family, with a small byte-level BPE tokenizer trained
in memory, so unit tests need no download and run in seconds."""

from __future__ import annotations

import os
from functools import lru_cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "The mother tongue of Danielle Darrieux is French.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Toko Yasuda plays the guitar. Autonomous University of Madrid is in Spain.",
    "Because the weather was nice, we walked to the river and talked about the city.",
    "You can find the answer in the book that I gave you yesterday.",
    "Therefore the company announced a new product in London and Berlin.",
    "English, German, Spanish and Japanese are languages spoken by many people.",
] * 4

VOCAB = 400
# The device of the tiny models: SUTURE_TEST_DEVICE=cuda runs the unit tests on a GPU (CPU by default).
TEST_DEVICE = os.environ.get("SUTURE_TEST_DEVICE", "cpu")


@lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")


_GQA = dict(num_hidden_layers=4, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64)
CONFIGS = {
    "gpt2": dict(n_layer=4, n_embd=32, n_head=4, n_positions=128),
    "gptj": dict(n_layer=4, n_embd=32, n_head=4, n_positions=128, rotary_dim=4),
    "gpt_neox": dict(num_hidden_layers=4, hidden_size=32, num_attention_heads=4, intermediate_size=64),
    "llama": _GQA,
    "mistral": _GQA,
    "qwen2": _GQA,
    "gemma": {**_GQA, "head_dim": 8},
    "gemma2": {**_GQA, "head_dim": 8},
    "gemma3_text": {**_GQA, "head_dim": 8, "sliding_window": 4},
    # multimodal Gemma 3 (Gemma3ForConditionalGeneration): a tiny text decoder and a one-layer vision tower
    "gemma3": dict(text_config={**_GQA, "head_dim": 8, "sliding_window": 4},
                   vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, image_size=28, patch_size=14),
                   mm_tokens_per_image=4),
}
FAMILIES = sorted(CONFIGS)
# model types whose text fields live in a sub-config (the ids and vocabulary go there too)
_NESTED_TEXT = {"gemma3"}


def tiny_config(model_type: str):
    """The tiny config of a family, sized for the tiny tokenizer's vocabulary."""
    vocab = len(tiny_tokenizer())
    ids = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    fields = dict(CONFIGS[model_type])
    if model_type in _NESTED_TEXT:
        fields["text_config"] = {**fields["text_config"], **ids}
        # image tokens at the top of the vocabulary, which the tiny corpus never produces
        return AutoConfig.for_model(model_type, image_token_index=vocab - 1, boi_token_index=vocab - 2,
                                    eoi_token_index=vocab - 3, **fields)
    return AutoConfig.for_model(model_type, **ids, **fields)


def tiny_model(model_type: str, seed: int = 0):
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    model = AutoModelForCausalLM.from_config(tiny_config(model_type), dtype=torch.float32)
    return model.to(TEST_DEVICE).eval(), tok
