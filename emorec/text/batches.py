"""Tokenised features, padded batches, and the deterministic order in which each rank sees them.

The order depends only on (seed, epoch, rank), so the data position after a resume is just the
number of micro-batches consumed: no sampler state has to be saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from emorec.config import PromptConfig
from emorec.data.schema import DatasetSpec, Example
from emorec.errors import ConfigError
from emorec.text.prompts import answer_ids, encode_prompt

IGNORE = -100

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Feature:
    example: int
    prompt_ids: list[int]
    answer_ids: list[int]


@dataclass(frozen=True)
class EncodedExamples:
    prompts: list[list[int]]
    answers: dict[str, list[int]]
    cut: int  # examples whose target utterance was cut (its end kept) to fit prompt.max_length


def encode_all(examples: list[Example], spec: DatasetSpec, tokenizer, cfg: PromptConfig) -> EncodedExamples:
    """Prompt ids for every example (context trimmed, then the target's start, to fit beside the longest answer),
    the answers, and how many targets were cut; a prompt that cannot fit at all is a ConfigError."""
    answers = answer_ids(tokenizer, spec)
    longest = max(len(a) for a in answers.values())
    budget = cfg.max_length - longest
    encoded = [encode_prompt(ex, spec, tokenizer, cfg, budget) for ex in examples]
    for ex, enc in zip(examples, encoded):
        if enc.over_budget:
            raise ConfigError(
                f"prompt.max_length={cfg.max_length} is too small for {spec.name}: the prompt of example {ex.id!r} "
                f"takes about {enc.fixed_tokens} tokens besides the utterance, and the longest answer {longest}; set "
                f"prompt.max_length to at least {enc.fixed_tokens + longest + 16}")
    cut = sum(enc.target_cut > 0 for enc in encoded)
    if cut:
        log.warning("%d of %d %s examples are longer than prompt.max_length=%d allows even without context: their "
                    "utterance was cut to its last tokens", cut, len(examples), spec.name, cfg.max_length)
    return EncodedExamples([enc.prompt_ids for enc in encoded], answers, cut)


def encode_examples(
    examples: list[Example], spec: DatasetSpec, tokenizer, cfg: PromptConfig
) -> tuple[list[list[int]], dict[str, list[int]]]:
    """Prompt ids for every example and the answers (see encode_all; a cut is logged)."""
    out = encode_all(examples, spec, tokenizer, cfg)
    return out.prompts, out.answers


def training_features(examples: list[Example], spec: DatasetSpec, tokenizer, cfg: PromptConfig) -> list[Feature]:
    """One feature per (example, gold label); multi-label examples teach each of their labels."""
    prompts, answers = encode_examples(examples, spec, tokenizer, cfg)
    return [Feature(i, prompts[i], answers[label]) for i, ex in enumerate(examples) for label in ex.labels]


def collate(features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded causal-LM batch; labels are IGNORE everywhere but the answer tokens."""
    length = max(len(f.prompt_ids) + len(f.answer_ids) for f in features)
    input_ids = torch.full((len(features), length), pad_id, dtype=torch.long)
    labels = torch.full((len(features), length), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(features), length), dtype=torch.long)
    for row, f in enumerate(features):
        ids = f.prompt_ids + f.answer_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, len(f.prompt_ids) : len(ids)] = torch.tensor(f.answer_ids)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


class MicroBatchOrder:
    """Micro-batch k of this rank, for k = 0, 1, 2, ... across epochs, reshuffled each epoch."""

    def __init__(self, n: int, *, world: int, rank: int, micro_batch: int, seed: int):
        self.n, self.world, self.rank, self.micro_batch, self.seed = n, world, rank, micro_batch, seed
        self.per_epoch = (n // world) // micro_batch
        if self.per_epoch == 0:
            raise ConfigError(
                f"train split has {n} features, fewer than micro_batch_size ({micro_batch}) x world size "
                f"({world}); lower train.micro_batch_size or add data"
            )
        self._epoch = -1
        self._perm: list[int] = []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._epoch = epoch
        return self._perm

    def epoch_of(self, k: int) -> int:
        return k // self.per_epoch

    def indices(self, k: int) -> list[int]:
        perm = self._permutation(self.epoch_of(k))
        mine = perm[self.rank :: self.world][: self.per_epoch * self.micro_batch]
        j = k % self.per_epoch
        return mine[j * self.micro_batch : (j + 1) * self.micro_batch]
