"""P-Tuning v2's prefix held by each attention module for the current forward, so compiled decoder layers stay one
graph.

peft hands the prefix over as a KV cache, and each layer looks its own part up by its index: a compiled layer then
specialises on that index, one graph per layer. Here the packed path gives each attention module its layer's prefix
keys and values, and an attention function registered with transformers prepends them before the usual kernel.
With no prefix set (peft's own forward, generation, scoring from a cache) it is the usual kernel unchanged.
"""

from __future__ import annotations

import torch

PREFIXED = {"flex_attention": "emorec_prefix_flex", "sdpa": "emorec_prefix_sdpa"}
FLEX = {"flex_attention", PREFIXED["flex_attention"]}


def _attention_fn(inner: str):
    def attend(module, query, key, value, attention_mask, **kwargs):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        prefix = getattr(module, "emorec_prefix", None)
        if prefix is not None:
            key, value = torch.cat([prefix[0], key], dim=2), torch.cat([prefix[1], value], dim=2)
        return ALL_ATTENTION_FUNCTIONS[inner](module, query, key, value, attention_mask, **kwargs)

    return attend


def register() -> None:
    """Each variant gets its kernel's attention function and mask builder (transformers builds masks per name)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    for inner, name in PREFIXED.items():
        AttentionInterface.register(name, _attention_fn(inner))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[inner])


def use_prefixed_attention(base) -> bool:
    """Switch `base` to the prefix-aware variant of its attention, where there is one."""
    current = base.config._attn_implementation
    if current in PREFIXED:
        register()
        base.set_attn_implementation(PREFIXED[current])
    return base.config._attn_implementation in PREFIXED.values()


def set_prefix(decoder, prompt) -> None:
    """Give layer i's attention the i-th (keys, values) of peft's prompt (a Cache, or a tuple of pairs); None clears."""
    layers = decoder.layers
    if prompt is None:
        pairs = [None] * len(layers)
    elif hasattr(prompt, "layers"):
        pairs = [(layer.keys, layer.values) for layer in prompt.layers]
    else:
        pairs = [(k, v) for k, v in prompt]
    for layer, pair in zip(layers, pairs, strict=True):
        layer.self_attn.emorec_prefix = pair


def is_flex(base) -> bool:
    return base.config._attn_implementation in FLEX

