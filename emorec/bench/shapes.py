"""The full-size model shapes `emorec bench` builds on a GPU: GLM-4-9B, and ChatGLM2/3-6B as converted."""

from __future__ import annotations

# ChatGLM2-6B / ChatGLM3-6B as their config.json describes them (the keys the conversion reads).
CHATGLM_6B = {"hidden_size": 4096, "num_layers": 28, "num_attention_heads": 32, "kv_channels": 128,
              "multi_query_attention": True, "multi_query_group_num": 2, "ffn_hidden_size": 13696,
              "padded_vocab_size": 65024, "layernorm_epsilon": 1e-5, "add_qkv_bias": True, "add_bias_linear": False,
              "rmsnorm": True, "post_layer_norm": True, "original_rope": True, "eos_token_id": 2, "pad_token_id": 0}
SHAPES = ("glm4-9b", "chatglm2-6b", "chatglm3-6b")
SHAPE_LABELS = {"glm4-9b": "GLM-4-9B shape (GlmConfig defaults)", "chatglm2-6b": "ChatGLM2-6B shape (converted)",
                "chatglm3-6b": "ChatGLM3-6B shape (converted)"}


def shape_config(shape: str):
    """The GlmConfig of a full-size model shape: GLM-4-9B, or ChatGLM2/3-6B mapped as `emorec convert` maps them."""
    from transformers import GlmConfig

    from emorec.model.chatglm_weights import glm_config

    if shape == "glm4-9b":
        return GlmConfig()
    version = int(shape[7])
    return glm_config({**CHATGLM_6B, "seq_length": 32768 if version == 2 else 8192}, version, shape)
