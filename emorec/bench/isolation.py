"""Does packing keep each sample to itself, and compute what peft computes? Run on the model being benchmarked."""

from __future__ import annotations

from dataclasses import replace

import torch

from emorec.model.families import attention_implementation
from emorec.model.packed_lm import PackedCausalLM, num_prefix_tokens, to_device
from emorec.model.prefix_attention import is_flex
from emorec.text.batches import Feature
from emorec.train.batching import collate_packed


def isolation_check(packed: PackedCausalLM, features: list[Feature], pad_id: int, device: torch.device) -> dict:
    """Is each packed sample isolated from the others, and does the packed path compute what peft computes?

    leak: the row is run again with the first sample's prompt replaced; the other samples' logits must not move.
    rel_error: packed logits at the answer positions against each sample run alone through peft under SDPA, next
    to the noise floor of two standard kernels (SDPA against eager attention, each sample alone)."""
    peft = packed.peft
    base = peft.get_base_model()
    prefix = num_prefix_tokens(peft)
    flex = is_flex(base)
    chunk = features[:6]
    g = torch.Generator().manual_seed(1)
    other = replace(chunk[0], prompt_ids=torch.randint(2, base.config.vocab_size, (len(chunk[0].prompt_ids),),
                                                        generator=g).tolist())
    packed.eval()
    with torch.no_grad():
        def run_packed(rows: list[Feature]) -> torch.Tensor:
            batch = collate_packed(rows, pad_id, prefix, dense_mask=not flex)
            return packed(**to_device(batch, device, packed)).logits.float()

        def run_alone(impl: str) -> torch.Tensor:
            with attention_implementation(base, impl):
                parts = []
                for f in chunk:
                    logits = peft(input_ids=torch.tensor([f.prompt_ids + f.answer_ids], device=device)).logits[0]
                    start = len(f.prompt_ids) - 1
                    parts.append(logits[start : start + len(f.answer_ids)].float())
            return torch.cat(parts)

        got, swapped = run_packed(chunk), run_packed([other] + chunk[1:])
        sdpa, eager = run_alone("sdpa"), run_alone("eager")
    rest = len(chunk[0].answer_ids)
    leak = float((swapped[rest:] - got[rest:]).abs().max() / got[rest:].abs().max())
    rel = float((got - sdpa).norm() / sdpa.norm())
    floor = float((eager - sdpa).norm() / sdpa.norm())
    agree = float((got.argmax(-1) == sdpa.argmax(-1)).float().mean())
    tolerance = max(1e-4, 2 * floor)
    return {"packed_attention": "flex" if flex else "dense mask", "samples": len(chunk), "leak": leak,
            "rel_error": rel, "noise_floor": floor, "argmax_agreement": agree, "tolerance": tolerance,
            "ok": leak <= 1e-3 and rel <= tolerance}

