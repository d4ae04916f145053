"""How training turns features into micro-batches: a per-rank order (padded or packed rows) and the collate
function that builds each batch."""

from __future__ import annotations

import bisect

import torch

from emorec.config import RunConfig
from emorec.errors import ConfigError
from emorec.model.packed_lm import block_causal_mask
from emorec.text.batches import IGNORE, Feature, MicroBatchOrder, collate
from emorec.text.packing import feature_length, pack_groups, row_length


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


def batching(cfg: RunConfig, features, dist, pad_id: int, num_prefix: int):
    """The per-rank micro-batch order and how to build a batch: padded rows, or packed ones."""
    if cfg.train.packing:
        order = PackedOrder([feature_length(f) for f in features], budget=cfg.train.pack_tokens,
                            world=dist.world, rank=dist.rank, seed=cfg.seed)
        dense = cfg.model.attn_implementation != "flex_attention"
        # Compiled kernels (FlexAttention's too) are built once per shape, so such rows are padded to the budget.
        fixed = cfg.train.pack_tokens if cfg.train.compile or not dense else None
        return order, lambda idx: collate_packed([features[i] for i in idx], pad_id, num_prefix, pad_to=fixed,
                                                 dense_mask=dense)
    order = MicroBatchOrder(len(features), world=dist.world, rank=dist.rank,
                            micro_batch=cfg.train.micro_batch_size, seed=cfg.seed)
    return order, lambda idx: collate([features[i] for i in idx], pad_id)
