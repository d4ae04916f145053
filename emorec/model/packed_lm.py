"""Padding-free packing: many samples in one row, each attending only to itself (and the P-Tuning prefix).

The LM head runs only at the positions whose next token is an answer token, so no full-vocabulary
logits are made over the prompts. The loss is the mean over answer tokens, as in transformers' padded loss.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import PeftModel, PeftType

from emorec.model.prefix_attention import is_flex, set_prefix, use_prefixed_attention


def block_causal_mask(seq_ids: torch.Tensor, num_prefix: int = 0, branch_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[B,1,T,P+T] bool, True = attend: the prefix columns, and earlier tokens of the same sample.
    With `branch_ids`, a token sees only branch 0 (the shared stem) and its own branch of its sample."""
    same = seq_ids[:, :, None] == seq_ids[:, None, :]
    if branch_ids is not None:
        same = same & ((branch_ids[:, None, :] == 0) | (branch_ids[:, :, None] == branch_ids[:, None, :]))
    causal = torch.ones(seq_ids.shape[1], seq_ids.shape[1], dtype=torch.bool, device=seq_ids.device).tril()
    prefix = torch.ones(*seq_ids.shape, num_prefix, dtype=torch.bool, device=seq_ids.device)
    return torch.cat([prefix, same & causal], dim=-1)[:, None]


@dataclass
class PackedOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor


def num_prefix_tokens(model: torch.nn.Module) -> int:
    if isinstance(model, PeftModel) and model.active_peft_config.peft_type == PeftType.PREFIX_TUNING:
        return model.active_peft_config.num_virtual_tokens
    return 0


def cache_kwarg(decoder: torch.nn.Module) -> str:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name still works, with a warning)."""
    return _cache_kwarg(type(decoder))


@functools.cache
def _cache_kwarg(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def flex_block_mask(seq_ids: torch.Tensor, num_prefix: int, branch_ids: torch.Tensor | None = None):
    """The same mask as `block_causal_mask`, as a FlexAttention BlockMask (GPU path)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q, kv):
        k = (kv - num_prefix).clamp(min=0)
        return (kv < num_prefix) | ((seq_ids[b, q] == seq_ids[b, k]) & (k <= q))

    if branch_ids is not None:
        plain = mask_mod

        def mask_mod(b, h, q, kv):
            k = (kv - num_prefix).clamp(min=0)
            return plain(b, h, q, kv) & ((kv < num_prefix) | (branch_ids[b, k] == 0)
                                         | (branch_ids[b, k] == branch_ids[b, q]))

    batch, t = seq_ids.shape
    return create_block_mask(mask_mod, batch, None, t, t + num_prefix, device=seq_ids.device)


class PackedCausalLM(torch.nn.Module):
    """Wraps a peft model (`.peft`). Batches from `collate_packed` (they carry `logit_positions`) take the packed
    path; any other call goes to the peft model unchanged, so evaluation and generation work through it too."""

    def __init__(self, peft_model: torch.nn.Module):
        super().__init__()
        self.peft = peft_model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logit_positions: torch.Tensor | None = None,
        seq_ids: torch.Tensor | None = None,
        branch_ids: torch.Tensor | None = None,
        **kwargs,
    ):
        if logit_positions is None:
            return self.peft(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             labels=labels, **kwargs)
        base = self.peft.get_base_model() if isinstance(self.peft, PeftModel) else self.peft
        prefix = num_prefix_tokens(self.peft)
        if is_flex(base):
            if not _is_block_mask(attention_mask):
                attention_mask = flex_block_mask(seq_ids, prefix, branch_ids)
        elif attention_mask is None:
            attention_mask = block_causal_mask(seq_ids, prefix, branch_ids)
        decoder = base.get_decoder()
        cache = None
        # P-Tuning: the prefix goes to each attention module rather than through a cache (see prefix_attention).
        prefixed = bool(prefix) and use_prefixed_attention(base)
        if prefix:
            prompt = self.peft.get_prompt(batch_size=input_ids.shape[0])
            if prefixed:
                set_prefix(decoder, prompt)
            else:
                cache = prompt
        try:
            hidden = decoder(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids + prefix,
                use_cache=False, **{cache_kwarg(decoder): cache},
            ).last_hidden_state
        finally:
            if prefixed:
                set_prefix(decoder, None)
        logits = base.get_output_embeddings()(hidden.flatten(0, 1)[logit_positions]).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels.flatten()[logit_positions + 1])
        return PackedOutput(loss=loss, logits=logits)


def _is_block_mask(mask) -> bool:
    from torch.nn.attention.flex_attention import BlockMask

    return isinstance(mask, BlockMask)


def to_device(batch: dict[str, torch.Tensor], device: torch.device, model: torch.nn.Module) -> dict:
    """Copy a batch to the device without blocking the host (pinned memory), and for a packed batch under
    FlexAttention build its BlockMask there, so both can run ahead while the device works on the previous step."""
    if device.type == "cuda":
        batch = {k: v.pin_memory() for k, v in batch.items()}
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    peft = unwrap(model)
    base = peft.get_base_model() if isinstance(peft, PeftModel) else peft
    if "seq_ids" in batch and is_flex(base):
        batch["attention_mask"] = flex_block_mask(batch["seq_ids"], num_prefix_tokens(peft), batch.get("branch_ids"))
    return batch


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The peft (or plain transformers) model inside a DeepSpeed engine and/or a PackedCausalLM."""
    from transformers import PreTrainedModel

    while not isinstance(model, (PeftModel, PreTrainedModel)):
        inner = model.peft if isinstance(model, PackedCausalLM) else getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            raise TypeError(f"cannot find a transformers/peft model inside {type(model).__name__}")
        model = inner
    return model
