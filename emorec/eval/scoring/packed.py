"""Label scoring from packed rows. Each prompt appears once, followed by one short branch per label; a branch sees
its prompt and itself, never another branch. One forward scores every label of every prompt in a row, with no
padding between prompts and logits only where a label token is predicted. Same result as `scoring.label_logprobs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from emorec.errors import EmorecError
from emorec.model.packed_lm import PackedCausalLM, block_causal_mask, num_prefix_tokens, to_device, unwrap
from emorec.model.prefix_attention import is_flex
from emorec.text.packing import pack_groups, row_length


class NonFiniteScore(EmorecError):
    """A real label score came out NaN or infinite: a prediction from it would be silently wrong."""


@dataclass(frozen=True)
class Segment:
    """One prompt with its label branches, as a packed-row segment."""

    ids: list[int]
    positions: list[int]
    branches: list[int]
    targets: list[tuple[int, int, int]]  # (offset of the predicting token, label index, target token)


def segment(prompt: list[int], answers: list[list[int]]) -> Segment:
    """Branch j holds answer j without its last token: each answer token is predicted by the one before it, the
    first by the prompt's last token."""
    n = len(prompt)
    ids, positions, branches = list(prompt), list(range(n)), [0] * n
    targets: list[tuple[int, int, int]] = []
    for j, answer in enumerate(answers):
        start = len(ids)
        ids += answer[:-1]
        positions += range(n, n + len(answer) - 1)
        branches += [j + 1] * (len(answer) - 1)
        targets += [(n - 1 if t == 0 else start + t - 1, j, token) for t, token in enumerate(answer)]
    return Segment(ids, positions, branches, targets)


def plan_rows(prompts: list[list[int]], answers: list[list[int]], budget: int) -> list[list[int]]:
    """Prompt indices per row: first-fit decreasing over segment lengths."""
    extra = sum(len(a) - 1 for a in answers)
    return pack_groups([len(p) + extra for p in prompts], budget)


def collate_scoring(segments: list[Segment], pad_id: int, num_prefix: int, *, pad_to: int | None,
                    dense_mask: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(batch for `PackedCausalLM`, picks): picks is [k, 4], one row per predicted label token: (row of the logits,
    segment, label, token). Padding (see `packing.row_length`) is a filler segment that no label reads."""
    ids, pos, seq, branch, targets = [], [], [], [], []
    for s, seg in enumerate(segments):
        offset = len(ids)
        ids += seg.ids
        pos += seg.positions
        seq += [s] * len(seg.ids)
        branch += seg.branches
        targets += [(offset + at, s, j, token) for at, j, token in seg.targets]
    filler = row_length(len(ids), pad_to, flex=not dense_mask) - len(ids)
    if filler:
        ids += [pad_id] * filler
        pos += range(filler)
        seq += [len(segments)] * filler
        branch += [0] * filler
    logit_positions = sorted({t[0] for t in targets})
    row_of = {p: r for r, p in enumerate(logit_positions)}
    batch = {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([pos]),
        "seq_ids": torch.tensor([seq]),
        "branch_ids": torch.tensor([branch]),
        "logit_positions": torch.tensor(logit_positions, dtype=torch.long),
    }
    if dense_mask:
        batch["attention_mask"] = block_causal_mask(batch["seq_ids"], num_prefix, batch["branch_ids"])
    picks = torch.tensor([(row_of[p], s, j, token) for p, s, j, token in targets], dtype=torch.long).view(-1, 4)
    return batch, picks


@torch.no_grad()
def label_logprobs(
    forward,
    prompts: list[list[int]],
    answers: list[list[int]],
    *,
    budget: int,
    pad_id: int,
    device: torch.device,
    progress=None,
    rows: list[list[int]] | None = None,
    fixed_rows: bool = False,
) -> torch.Tensor:
    """log p(answer_j | prompt_i) summed over the answer tokens, as an [n_prompts, n_labels] tensor.

    `forward` is a DeepSpeed engine, a PackedCausalLM, a peft model or a transformers model. Rows hold up to
    `budget` tokens; under FlexAttention or with `fixed_rows` (compiled layers) every row is padded to `budget`, so
    kernels compile once. `rows` is the plan, `plan_rows` by default; an empty row in it runs a forward that scores
    nothing, so that ZeRO-3 ranks can run the same number of forwards.
    """
    model = unwrap(forward)
    packed = PackedCausalLM(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    flex = is_flex(base)
    prefix = num_prefix_tokens(model)
    out = torch.zeros(len(prompts), len(answers), dtype=torch.float32)
    rows = plan_rows(prompts, answers, budget) if rows is None else rows
    was_training = model.training
    model.eval()
    try:
        for members in rows:
            segments = [segment(prompts[i], answers) for i in members] or [Segment([pad_id], [0], [0], [])]
            batch, picks = collate_scoring(segments, pad_id, prefix, pad_to=budget if flex or fixed_rows else None,
                                           dense_mask=not flex)
            logits = packed(**to_device(batch, device, model)).logits
            if not len(picks):
                continue
            logp = torch.log_softmax(logits, dim=-1)[picks[:, 0].to(device), picks[:, 3].to(device)]
            if not torch.isfinite(logp).all():
                raise NonFiniteScore(f"label scoring gave a non-finite log-probability for prompts {members} "
                                     f"(a row of {batch['input_ids'].shape[1]} tokens); the model or its "
                                     "attention kernel produced NaN/inf, so no prediction is made from it")
            cells = torch.tensor(members)[picks[:, 1]] * len(answers) + picks[:, 2]
            out.view(-1).index_add_(0, cells, logp.float().cpu())
            if progress is not None:
                progress.update(len(members) * len(answers))
    finally:
        model.train(was_training)
    return out
