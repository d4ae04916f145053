"""Label scoring from one pass over each prompt: the prompt's KV cache is expanded over the labels, and
only the label tokens run again. Same result as `scoring.label_logprobs`, which runs prompt+label per pair.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import DynamicCache

from emorec.model.families import attention_implementation
from emorec.model.packed_lm import cache_kwarg, num_prefix_tokens, unwrap
from emorec.model.prefix_attention import is_flex


def distinct_first_tokens(answers: list[list[int]]) -> bool:
    return len({a[0] for a in answers}) == len(answers)


@torch.no_grad()
def label_logprobs(
    forward,
    prompts: list[list[int]],
    answers: list[list[int]],
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    progress=None,
    first_token: bool = False,
) -> torch.Tensor:
    """log p(answer_j | prompt_i) summed over the answer tokens, as an [n_prompts, n_labels] tensor.

    `forward` is a DeepSpeed engine, a PackedCausalLM, a peft model or a transformers model; `batch_size`
    counts prompts per forward. With `first_token=True` and distinct first answer tokens, only the first
    token is scored (log p(a_j[0] | prompt_i)): a cheaper ranking that can differ from the full sum.
    """
    model = unwrap(forward)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = num_prefix_tokens(model)
    first_only = first_token and distinct_first_tokens(answers)
    out = torch.empty(len(prompts), len(answers), dtype=torch.float32)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding per batch
    with _padded_attention(base):
        for start in range(0, len(prompts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = _score_chunk(model, base, [prompts[i] for i in rows], answers, prefix, first_only, pad_id,
                                     device)
            if progress is not None:
                progress.update(len(rows) * len(answers))
    return out


def _padded_attention(base):
    """Padded prompt batches run under SDPA; a model set up for packed FlexAttention is switched back after."""
    return attention_implementation(base, "sdpa") if is_flex(base) else contextlib.nullcontext()


def _score_chunk(model, base, chunk: list[list[int]], answers: list[list[int]], prefix: int, first_only: bool,
                 pad_id: int, device: torch.device) -> torch.Tensor:
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    lengths = torch.tensor([len(p) for p in chunk], device=device)
    ids, mask = _right_pad(chunk, pad_id, device)
    mask = torch.cat([torch.ones(len(chunk), prefix, dtype=mask.dtype, device=device), mask], dim=1)
    cache = model.get_prompt(batch_size=len(chunk)) if prefix else DynamicCache(config=base.config)
    hidden = decoder(
        input_ids=ids, attention_mask=mask, position_ids=prefix + torch.arange(ids.shape[1], device=device)[None],
        use_cache=True, **{cache_kwarg(decoder): cache},
    ).last_hidden_state
    last = hidden[torch.arange(len(chunk), device=device), lengths - 1]
    scores = torch.log_softmax(head(last).float(), dim=-1)[:, [a[0] for a in answers]]
    if not first_only and max(map(len, answers)) > 1:
        scores += _continuations(decoder, head, cache, mask, lengths + prefix, answers, pad_id, device)
    return scores.cpu()


def _right_pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(1, max(map(len, seqs)))
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _continuations(decoder, head, cache, mask, starts, answers, pad_id, device) -> torch.Tensor:
    """sum_k log p(a_j[k+1] | prompt_i, a_j[:k+1]) for every (i, j), over the prompt cache repeated per label."""
    n_prompts, n_labels = mask.shape[0], len(answers)
    cache.batch_repeat_interleave(n_labels)
    tails, tail_mask = _right_pad([a[:-1] for a in answers], pad_id, device)
    targets, _ = _right_pad([a[1:] for a in answers], pad_id, device)
    rows = n_prompts * n_labels
    full_mask = torch.cat([mask.repeat_interleave(n_labels, 0), tail_mask.repeat(n_prompts, 1)], dim=1)
    positions = starts.repeat_interleave(n_labels)[:, None] + torch.arange(tails.shape[1], device=device)
    hidden = decoder(
        input_ids=tails.repeat(n_prompts, 1), attention_mask=full_mask, position_ids=positions,
        use_cache=True, **{cache_kwarg(decoder): cache},
    ).last_hidden_state
    keep = tail_mask.repeat(n_prompts, 1).bool()
    logp = torch.log_softmax(head(hidden[keep]).float(), dim=-1)
    picked = logp.gather(1, targets.repeat(n_prompts, 1)[keep][:, None])[:, 0]
    sums = torch.zeros(rows, device=device).index_add_(0, keep.nonzero()[:, 0], picked)
    return sums.view(n_prompts, n_labels)
