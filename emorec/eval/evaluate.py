"""Evaluation: label scoring over a split, sharded across ranks, scored with the dataset's metric."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from emorec.config import RunConfig
from emorec.data.schema import DatasetSpec, Example
from emorec.dist import Dist
from emorec.eval.metrics import score
from emorec.eval.scoring import packed as packed_scoring
from emorec.eval.scoring.kv_cache import label_logprobs
from emorec.eval.scoring.reference import decide
from emorec.text.batches import encode_examples


def _shard(n: int, dist: Dist) -> list[int]:
    """This rank's indices, padded by repetition so every rank runs the same number of forwards (ZeRO-3)."""
    per_rank = -(-n // dist.world)
    mine = list(range(dist.rank, n, dist.world))
    return mine + [mine[-1] if mine else 0] * (per_rank - len(mine))


def _scoring_rows(prompts: list[list[int]], answers: list[list[int]], budget: int, dist: Dist,
                  device) -> list[list[int]]:
    """This rank's packed scoring rows, with empty rows added up to the most any rank has: every rank runs that many
    forwards (ZeRO-3 gathers in step)."""
    rows = packed_scoring.plan_rows(prompts, answers, budget)
    most = torch.tensor(len(rows), device=device)
    if dist.world > 1:
        torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
    return rows + [[] for _ in range(int(most) - len(rows))]


def evaluate(
    forward, spec: DatasetSpec, examples: list[Example], tokenizer, cfg: RunConfig, dist: Dist, device: torch.device,
    *, show_progress: bool = True,
) -> tuple[dict, list[dict]]:
    prompts, answers = encode_examples(examples, spec, tokenizer, cfg.prompt)
    shard = _shard(len(examples), dist)
    bar = tqdm(total=len(shard) * len(answers), desc="eval", unit="pair", disable=not (show_progress and dist.is_main))
    mine, labels = [prompts[i] for i in shard], list(answers.values())
    if cfg.train.packing:
        logprobs = packed_scoring.label_logprobs(
            forward, mine, labels, budget=cfg.train.pack_tokens, pad_id=tokenizer.pad_token_id, device=device,
            progress=bar, rows=_scoring_rows(mine, labels, cfg.train.pack_tokens, dist, device),
            fixed_rows=cfg.train.compile,
        )
    else:
        logprobs = label_logprobs(
            forward, mine, labels, batch_size=cfg.eval.batch_size, pad_id=tokenizer.pad_token_id, device=device,
            progress=bar,
        )
    bar.close()
    parts = [(shard, logprobs)]
    if dist.world > 1:
        parts = [None] * dist.world
        torch.distributed.all_gather_object(parts, (shard, logprobs))
    full = torch.empty(len(examples), len(answers))
    for idx, lp in parts:
        full[idx] = lp
    preds, probs = decide(spec, full, cfg.eval.multi_label_threshold)
    gold = [ex.labels for ex in examples]
    metrics = score(spec, gold, preds)
    rows = [
        {"id": ex.id, "gold": list(ex.labels), "pred": list(p), "probs": dict(zip(spec.labels, map(float, pr)))}
        for ex, p, pr in zip(examples, preds, probs)
    ]
    return metrics, rows
