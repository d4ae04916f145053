"""Padding-free packing: many samples in one row, each attending only to itself (and the P-Tuning prefix).

The LM head runs only at the positions whose next token is an answer token, so no full-vocabulary
logits are made over the prompts. The loss is the mean over answer tokens, as in transformers' padded loss.
"""

from __future__ import annotations

import bisect
import functools
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import PeftModel, PeftType

from .batches import IGNORE, Feature
from .errors import ConfigError
from .prefix_attention import is_flex, set_prefix, use_prefixed_attention


def pack_groups(lengths: list[int], budget: int, granularity: int = 1) -> list[list[int]]:
    """First-fit decreasing: groups of indices whose lengths sum to at most `budget` (a longer one stands alone).
    Items are taken longest first by `length // granularity`, ties in index order."""
    groups: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-(lengths[i] // granularity), i)):
        n = lengths[i]
        for g, free in enumerate(room):
            if n <= free:
                groups[g].append(i)
                room[g] -= n
                break
        else:
            groups.append([i])
            room.append(budget - n)
    return groups


class PackedOrder:
    """Like `batches.MicroBatchOrder`, but micro-batch k is one packed row of at most `budget` tokens.

    Each epoch shuffles the features and packs them first-fit decreasing over lengths rounded to `granularity`
    tokens, so rows fill while their members vary between epochs (strict length order would group samples of
    one label together, since answer lengths differ by label). Depends only on (seed, epoch, rank); ranks share
    the packing and deal its rows out, so all of them run the same number of rows per epoch.
    """

    def __init__(self, lengths: list[int], *, budget: int, world: int, rank: int, seed: int, granularity: int = 16):
        self.lengths, self.budget, self.granularity = lengths, budget, granularity
        self.world, self.rank, self.seed = world, rank, seed
        self._epochs: list[list[list[int]]] = []
        self._starts = [0]
        if not self._extend():
            raise ConfigError(f"{len(lengths)} features pack into fewer rows of {budget} tokens than there are ranks "
                              f"({world}); lower the pack token budget or add data")

    def _extend(self) -> int:
        g = torch.Generator().manual_seed(self.seed * 100_003 + len(self._epochs))
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        groups = pack_groups([self.lengths[i] for i in perm], self.budget, self.granularity)
        order = torch.randperm(len(groups), generator=g).tolist()
        per_rank = len(groups) // self.world
        self._epochs.append([[perm[i] for i in groups[o]] for o in order[self.rank :: self.world][:per_rank]])
        self._starts.append(self._starts[-1] + per_rank)
        return per_rank

    def epoch_start(self, epoch: int) -> int:
        """The first micro-batch index of `epoch`."""
        while len(self._starts) <= epoch:
            self._extend()
        return self._starts[epoch]

    def epoch_of(self, k: int) -> int:
        while self._starts[-1] <= k:
            self._extend()
        return bisect.bisect_right(self._starts, k) - 1

    def indices(self, k: int) -> list[int]:
        epoch = self.epoch_of(k)
        return self._epochs[epoch][k - self._starts[epoch]]


# FlexAttention's block: under it every packed row is padded to a multiple of this many tokens. Inductor's CPU
# kernel with 256-bit vectors (AVX2, no AVX-512) returns wrong scores or NaN for a query block shorter than this
# (torch 2.13; tests/test_packed_scoring.py pins it), and GPU kernels run whole blocks anyway.
FLEX_BLOCK = 128


def flex_row_length(n: int) -> int:
    """The length a row of `n` tokens is padded to under FlexAttention: a whole number of flex blocks."""
    return -(-n // FLEX_BLOCK) * FLEX_BLOCK


def row_length(n: int, pad_to: int | None, flex: bool) -> int:
    """A row of `n` tokens is padded to `pad_to` (fixed shapes for compiled kernels), then under FlexAttention up to
    whole flex blocks. Fillers form their own segment, so every position, real or padding, attends to itself."""
    target = max(n, pad_to or 0)
    return flex_row_length(target) if flex else target


def feature_length(f: Feature) -> int:
    return len(f.prompt_ids) + len(f.answer_ids)


def block_causal_mask(seq_ids: torch.Tensor, num_prefix: int = 0, branch_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[B,1,T,P+T] bool, True = attend: the prefix columns, and earlier tokens of the same sample.
    With `branch_ids`, a token sees only branch 0 (the shared stem) and its own branch of its sample."""
    same = seq_ids[:, :, None] == seq_ids[:, None, :]
    if branch_ids is not None:
        same = same & ((branch_ids[:, None, :] == 0) | (branch_ids[:, :, None] == branch_ids[:, None, :]))
    causal = torch.ones(seq_ids.shape[1], seq_ids.shape[1], dtype=torch.bool, device=seq_ids.device).tril()
    prefix = torch.ones(*seq_ids.shape, num_prefix, dtype=torch.bool, device=seq_ids.device)
    return torch.cat([prefix, same & causal], dim=-1)[:, None]


def collate_packed(
    features: list[Feature], pad_id: int, num_prefix: int = 0, *, pad_to: int | None = None, dense_mask: bool = True
) -> dict[str, torch.Tensor]:
    """One packed row. Padding (see `row_length`) is a label-free filler segment."""
    ids, pos, seq, labels = [], [], [], []
    for s, f in enumerate(features):
        n = feature_length(f)
        ids += f.prompt_ids + f.answer_ids
        labels += [IGNORE] * len(f.prompt_ids) + f.answer_ids
        pos += range(n)
        seq += [s] * n
    filler = row_length(len(ids), pad_to, flex=not dense_mask) - len(ids)
    if filler:
        ids += [pad_id] * filler
        labels += [IGNORE] * filler
        pos += range(filler)
        seq += [len(features)] * filler
    labels_t = torch.tensor([labels])
    batch = {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([pos]),
        "seq_ids": torch.tensor([seq]),
        "labels": labels_t,
        "logit_positions": torch.nonzero(labels_t[0, 1:] != IGNORE).flatten(),
    }
    if dense_mask:
        batch["attention_mask"] = block_causal_mask(batch["seq_ids"], num_prefix)
    return batch


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


class Prefetcher:
    """Micro-batch k+1 built and on its way to the device while the device still runs micro-batch k:
    call `get(k)` for the batch to run, and `prefetch(k + 1)` once its backward is queued."""

    def __init__(self, make_batch, order, device: torch.device, model: torch.nn.Module):
        self.make_batch, self.order, self.device, self.model = make_batch, order, device, model
        self._ready: tuple[int, dict, dict] | None = None

    def prefetch(self, k: int) -> None:
        host = self.make_batch(self.order.indices(k))
        self._ready = (k, host, to_device(host, self.device, self.model))

    def get(self, k: int) -> tuple[dict, dict]:
        """(the batch as built on the host, the same on the device)"""
        if self._ready is None or self._ready[0] != k:
            self.prefetch(k)
        _, host, on_device = self._ready
        self._ready = None
        return host, on_device


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The peft (or plain transformers) model inside a DeepSpeed engine and/or a PackedCausalLM."""
    from transformers import PreTrainedModel

    while not isinstance(model, (PeftModel, PreTrainedModel)):
        inner = model.peft if isinstance(model, PackedCausalLM) else getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            raise TypeError(f"cannot find a transformers/peft model inside {type(model).__name__}")
        model = inner
    return model
