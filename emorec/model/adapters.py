"""LoRA and P-Tuning v2 (deep prefix tuning) through peft, with the official recipes' defaults."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, PrefixTuningConfig, TaskType, get_peft_model

from emorec.config import MethodConfig
from emorec.model.families import LORA_TARGETS

ADAPTER = "adapter"  # the directory under a run (and in an export) that holds the trained adapter


def peft_config(method: MethodConfig, family: str, base: torch.nn.Module):
    if method.name == "lora":
        lc = method.lora
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=lc.r,
            lora_alpha=lc.alpha,
            lora_dropout=lc.dropout,
            target_modules=lc.target_modules or LORA_TARGETS[family],
        )
    pc = method.ptuning
    return PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=pc.pre_seq_len,
        prefix_projection=pc.prefix_projection,
        encoder_hidden_size=pc.encoder_hidden_size or base.config.hidden_size,
    )


def apply_adapter(base: torch.nn.Module, method: MethodConfig, family: str, name_or_path: str, seed: int) -> PeftModel:
    cfg = peft_config(method, family, base)
    cfg.base_model_name_or_path = name_or_path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, cfg)
    return model


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
