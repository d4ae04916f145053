"""Label scoring: the log-likelihood of each label's full answer sequence. It cannot fail to parse."""

from __future__ import annotations

from typing import Callable

import torch

from emorec.data.schema import DatasetSpec


@torch.no_grad()
def label_logprobs(
    forward: Callable[..., object],
    prompts: list[list[int]],
    answers: list[list[int]],
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    progress=None,
) -> torch.Tensor:
    """log p(answer_j | prompt_i) summed over the answer tokens, as an [n_prompts, n_labels] tensor."""
    pairs = [(i, j) for i in range(len(prompts)) for j in range(len(answers))]
    out = torch.empty(len(prompts), len(answers), dtype=torch.float32)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs = [prompts[i] + answers[j] for i, j in chunk]
        length = max(map(len, seqs))
        ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        logits = forward(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        for row, (i, j) in enumerate(chunk):
            p, a = len(prompts[i]), answers[j]
            positions = torch.arange(p - 1, p - 1 + len(a))
            out[i, j] = logp[row, positions, torch.tensor(a)].sum()
        if progress is not None:
            progress.update(len(chunk))
    return out


def decide(spec: DatasetSpec, logprobs: torch.Tensor, threshold: float) -> tuple[list[tuple[str, ...]], torch.Tensor]:
    """Probabilities over labels and the predicted label(s) for each prompt."""
    probs = torch.softmax(logprobs, dim=-1)
    preds = []
    for row in probs:
        best = int(row.argmax())
        if spec.multi_label:
            chosen = {best} | {j for j, p in enumerate(row.tolist()) if p >= threshold}
            preds.append(tuple(spec.labels[j] for j in sorted(chosen)))
        else:
            preds.append((spec.labels[best],))
    return preds, probs
