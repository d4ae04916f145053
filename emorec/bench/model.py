"""`emorec bench`: emorec's training and scoring paths against a plain transformers+peft loop, in one process.

On a GPU the model is GLM-4-9B-shaped (`GlmConfig()` defaults, bf16, random weights, no download); on CPU it
is the tiny test GLM. Both sides see the same synthetic ERC-length data. emorec's side trains through the
DeepSpeed engine that `emorec train` uses (ZeRO-2), with packed rows; the baseline pads batches.
FLOPs: 4N per real training token (no weight gradients for frozen weights), 2N per scored prompt token,
N = the base model's parameters. Peak memory on CPU is the process's peak RSS so far (it cannot be reset).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from emorec.bench.isolation import isolation_check
from emorec.bench.profiling import profile_steps
from emorec.bench.shapes import SHAPE_LABELS, shape_config
from emorec.config import METHODS, MethodConfig, RunConfig
from emorec.dist import SINGLE
from emorec.model.adapters import trainable_parameters
from emorec.model.families import compile_decoder_layers
from emorec.model.packed_lm import PackedCausalLM, num_prefix_tokens
from emorec.model.prefix_attention import is_flex
from emorec.text.batches import IGNORE, Feature, collate
from emorec.text.packing import feature_length
from emorec.train.batching import batching
from emorec.train.prefetch import Prefetcher
from emorec.train.throughput import batch_counts

H100_BF16_TFLOPS = 989.0


@dataclass(frozen=True)
class Settings:
    gpu: bool
    steps: int
    warmup: int
    rounds: int
    budgets: tuple[int, ...]
    batch: int
    pad_to: int | None
    prompt_mean: int
    prompt_spread: int
    prompt_range: tuple[int, int]
    pre_seq_len: int
    eval_batch: int
    eval_batches: int
    new_tokens: int
    compile: bool


def settings(args: argparse.Namespace) -> Settings:
    """GPU: ERC-like lengths (mean ~150), baseline padded to 512. CPU: short lengths so it ends in seconds."""
    if torch.cuda.is_available():
        return Settings(
            gpu=True, steps=args.steps or (4 if args.quick else 10), warmup=3, rounds=1, budgets=tuple(args.budget or [8192]),
            batch=8, pad_to=512, prompt_mean=147, prompt_spread=60, prompt_range=(24, 509), pre_seq_len=128,
            eval_batch=32, eval_batches=2 if args.quick else 6, new_tokens=8, compile=args.compile,
        )
    return Settings(
        gpu=False, steps=args.steps or (3 if args.quick else 8), warmup=3, rounds=1 if args.quick else 3,
        budgets=tuple(args.budget or [512]), batch=8, pad_to=None, prompt_mean=28, prompt_spread=10, prompt_range=(6, 60),
        pre_seq_len=16, eval_batch=8, eval_batches=2 if args.quick else 5, new_tokens=4, compile=args.compile,
    )


def build_model(gpu: bool, shape: str = "glm4-9b"):
    """(model, pad_id, eos_id); the GPU model has the full-size `shape`, random, bf16; on CPU it is tiny-glm."""
    from transformers import GlmForCausalLM

    if not gpu:
        from emorec.model.families import tiny_glm, tiny_tokenizer

        tok = tiny_tokenizer()
        return tiny_glm(len(tok)).float(), tok.pad_token_id, tok.eos_token_id
    config = shape_config(shape)
    with torch.device("cuda"):
        model = GlmForCausalLM._from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    return model, config.pad_token_id, eos


def synthetic_data(s: Settings, vocab: int, eos: int, n: int, seed: int = 0):
    """ERC-like prompts (random tokens, normal lengths, clipped) and 7 labels of 1-3 tokens + EOS."""
    g = torch.Generator().manual_seed(seed)
    firsts = torch.randperm(vocab - 2, generator=g)[:7] + 2
    answers = [[int(f)] + torch.randint(2, vocab, (k % 3,), generator=g).tolist() + [eos] for k, f in enumerate(firsts)]
    lo, hi = s.prompt_range
    lengths = (torch.randn(n, generator=g) * s.prompt_spread + s.prompt_mean).round().clamp(lo, hi).int().tolist()
    labels = torch.randint(len(answers), (n,), generator=g).tolist()
    features = [Feature(i, torch.randint(2, vocab, (n_,), generator=g).tolist(), answers[y])
                for i, (n_, y) in enumerate(zip(lengths, labels))]
    return features, answers


def matmul_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    n, iters = (8192, 10) if device.type == "cuda" else (1024, 4)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(step: Callable[[int], tuple[int, int]], s: Settings, device: torch.device,
          rounds: list[range] | None = None) -> dict:
    """Warmup, then `rounds` rounds of `steps` steps (or the given ranges of k); the fastest round counts (CPU
    timings are noisy). step(k) does the work and returns (samples, real tokens)."""
    _reset_peak(device)
    for k in range(s.warmup):
        step(k)
    best: dict = {}
    rounds = rounds or [range(s.warmup + r * s.steps, s.warmup + (r + 1) * s.steps) for r in range(s.rounds)]
    for ks in rounds:
        _sync(device)
        start, samples, tokens = time.perf_counter(), 0, 0
        for k in ks:
            n, t = step(k)
            samples, tokens = samples + n, tokens + t
        _sync(device)
        seconds = time.perf_counter() - start
        if not best or samples / seconds > best["samples_per_s"]:
            best = {"samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds,
                    "samples": samples}
    return {**best, "peak_mem_gb": _peak_gb(device)}


def _pad(batch: dict[str, torch.Tensor], length: int, pad_id: int) -> dict[str, torch.Tensor]:
    extra = length - batch["input_ids"].shape[1]
    if extra <= 0:
        return batch
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE}
    return {k: torch.nn.functional.pad(v, (0, extra), value=fill[k]) for k, v in batch.items()}


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def baseline_train(model, features: list[Feature], s: Settings, pad_id: int, device: torch.device) -> dict:
    """Plain transformers+peft: padded micro-batches, torch AdamW, full-vocab logits, HF loss."""
    opt = torch.optim.AdamW(trainable_parameters(model), lr=1e-5)
    model.train()

    def step(k: int) -> tuple[int, int]:
        chunk = [features[(k * s.batch + i) % len(features)] for i in range(s.batch)]
        batch = collate(chunk, pad_id)
        if s.pad_to:
            batch = _pad(batch, s.pad_to, pad_id)
        model(**_to(batch, device)).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return len(chunk), sum(map(feature_length, chunk))

    result = timed(step, s, device)
    del opt
    return result


def packed_step(engine, features: list[Feature], cfg: RunConfig, pad_id: int, prefix: int, device: torch.device):
    """(step, order): one training step of emorec's path, with `emorec train`'s own packed batching for `cfg`, and
    the next row built and copied while the device runs this one."""
    order, make_batch = batching(cfg, features, SINGLE, pad_id, prefix)
    batches = Prefetcher(make_batch, order, device, engine.module)

    def step(k: int) -> tuple[int, int]:
        engine.train()
        host, on_device = batches.get(k)
        loss = engine(**on_device).loss
        engine.backward(loss)
        batches.prefetch(k + 1)
        engine.step()
        return batch_counts(host)

    return step, order


def emorec_train(engine, features: list[Feature], s: Settings, cfg: RunConfig, pad_id: int, prefix: int,
                 device: torch.device) -> dict:
    """Each timed round is one whole epoch of packed rows: first-fit decreasing fills rows unevenly (long samples
    first), so a few rows would not have the data's mean length, and samples/s would depend on which rows ran."""
    step, order = packed_step(engine, features, cfg, pad_id, prefix, device)
    epochs = [range(order.epoch_start(e), order.epoch_start(e + 1)) for e in range(1, s.rounds + 1)]
    return timed(step, s, device, epochs)


def parse_generated(generated: list[int], answers: list[list[int]]) -> int:
    """The label whose tokens appear first in the output (cut at EOS); else the one at the least edit distance.
    Token ids stand in for text: the GPU bench has no tokenizer."""
    eos = answers[0][-1]
    out = generated[: generated.index(eos)] if eos in generated else generated
    bodies = [a[:-1] or a for a in answers]
    starts = {j: next((i for i in range(len(out) - len(b) + 1) if out[i : i + len(b)] == b), None)
              for j, b in enumerate(bodies)}
    found = [(i, j) for j, i in starts.items() if i is not None]
    if found:
        return min(found)[1]
    return min(range(len(bodies)), key=lambda j: _edit_distance(out, bodies[j]))


def _edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def baseline_eval(model, prompts: list[list[int]], answers: list[list[int]], s: Settings, pad_id: int,
                  device: torch.device) -> dict:
    """Generate-and-parse: left-padded greedy generation of exactly `new_tokens` tokens per prompt."""
    model.eval()

    def step(k: int) -> tuple[int, int]:
        chunk = [prompts[(k * s.eval_batch + i) % len(prompts)] for i in range(s.eval_batch)]
        width = max(map(len, chunk))
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=s.new_tokens, min_new_tokens=s.new_tokens, pad_token_id=pad_id)
        for row in out[:, width:].tolist():
            parse_generated(row, answers)
        return len(chunk), sum(map(len, chunk))

    return timed(step, replace(s, steps=s.eval_batches, warmup=min(s.warmup, 2)), device)


def emorec_eval(engine, prompts: list[list[int]], answers: list[list[int]], s: Settings, budget: int, pad_id: int,
                device: torch.device, fixed_rows: bool = False) -> dict:
    """emorec's label scoring through the engine, one call per round as `evaluate` makes one per split: packed
    rows of prompts, each followed by a branch per label, every label scored in one forward."""
    from emorec.eval.scoring.packed import label_logprobs

    engine.eval()
    n = 4 * s.eval_batch * s.eval_batches

    def step(k: int) -> tuple[int, int]:
        chunk = [prompts[(k * n + i) % len(prompts)] for i in range(n)]
        label_logprobs(engine, chunk, answers, budget=budget, pad_id=pad_id, device=device,
                       fixed_rows=fixed_rows).argmax(1)
        return n, sum(map(len, chunk))

    return timed(step, replace(s, steps=1, warmup=1), device)


def _peft(base, method: str, s: Settings):
    from emorec.model.adapters import apply_adapter

    cfg = MethodConfig.model_validate({"name": method, "ptuning": {"pre_seq_len": s.pre_seq_len}})
    return apply_adapter(base, cfg, "glm", "bench", seed=0)


def _release(peft) -> None:
    if num_prefix_tokens(peft) == 0:
        peft.unload()
    _free()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Recorder:
    """Rows, checks, profiles and errors; the JSON is rewritten after each, so a killed run keeps what it measured."""

    def __init__(self, header: dict, out: str | None, gpu: bool, n_params: int, peak: float):
        self.result = {**header, "rows": [], "checks": [], "profiles": [], "errors": []}
        self.out, self.gpu, self.n_params, self.peak = out, gpu, n_params, peak
        self.started = time.perf_counter()
        print(format_head(self.result), flush=True)

    def row(self, task: str, method: str, system: str, budget: int | None, result: dict) -> None:
        flops = (4 if task == "train" else 2) * self.n_params * result["tokens_per_s"]
        row = {"task": task, "method": method, "system": system, "budget": budget, **result,
               "mfu_measured": flops / self.peak, "mfu_989": flops / (H100_BF16_TFLOPS * 1e12) if self.gpu else None}
        ref = row if system == "baseline" else next(
            (r for r in self.result["rows"] if r["system"] == "baseline" and r["task"] == task and r["method"] == method),
            None)
        row["vs_baseline"] = row["samples_per_s"] / ref["samples_per_s"] if ref else None
        self.result["rows"].append(row)
        print(format_row(row), flush=True)
        self.save()

    def add(self, kind: str, item: dict) -> None:
        self.result[kind].append(item)
        print(f"[{kind[:-1]}] " + json.dumps(item)[:1500], flush=True)
        self.save()

    def attempt(self, where: str, fn: Callable[[], object]):
        """Run one part; an exception (an OOM too) is recorded with its place and the run goes on."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported, and the other parts still run
            import traceback

            self.add("errors", {"where": where, "error": f"{type(e).__name__}: {e}"[:1000],
                                "traceback": traceback.format_exc()[-3000:]})
            _free()
            return None

    def save(self) -> None:
        self.result["wall_seconds"] = time.perf_counter() - self.started
        if self.out:
            os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
            with open(self.out, "w", encoding="utf-8") as f:
                json.dump(self.result, f, indent=2)


def _train_cfg(s: Settings, extra_steps: int, *, budget: int, compiled: bool, flex: bool) -> RunConfig:
    """The run config that `emorec train` would get for this row: packed rows of `budget` tokens."""
    return RunConfig.model_validate({
        "data": {"dataset": "custom", "path": "."},
        "model": {"attn_implementation": "flex_attention" if flex else None},
        "train": {"micro_batch_size": 1, "grad_accum": 1, "lr": 1e-5, "packing": True, "pack_tokens": budget,
                  "compile": compiled, "max_steps": s.warmup + s.rounds * s.steps + extra_steps + 2},
    })


def run_bench(args: argparse.Namespace) -> dict:
    from emorec.dist import setup_distributed
    from emorec.train.engine import create_engine

    s = settings(args)
    device = torch.device("cuda" if s.gpu else "cpu")
    if not s.gpu:
        torch.set_num_threads(1)  # tiny matmuls; a second thread only adds stalls on a shared machine
    dist = setup_distributed()
    base, pad_id, eos = build_model(s.gpu, args.shape)
    n_params = sum(p.numel() for p in base.parameters())
    dtype = next(base.parameters()).dtype
    peak = matmul_peak_flops(device, dtype)
    n_features = (s.warmup + s.rounds * s.steps + args.profile) * max(1, max(s.budgets) // s.prompt_mean)
    features, answers = synthetic_data(s, base.config.vocab_size, eos, n_features)
    prompts = [f.prompt_ids for f in features]
    methods = list(METHODS) if args.method == "both" else [args.method]
    rec = Recorder({
        "device": torch.cuda.get_device_name() if s.gpu else "cpu",
        "model": f"{SHAPE_LABELS[args.shape]}, random, bf16" if s.gpu else "tiny-glm, fp32",
        "base_params": n_params,
        "matmul_peak_tflops": peak / 1e12,
        "flops_per_token": "train 4N per real token, eval 2N per prompt token",
        "versions": {"torch": torch.__version__, **_versions()},
        "settings": {k: getattr(s, k) for k in s.__dataclass_fields__},
        "lengths": {"mean_tokens": sum(map(feature_length, features)) / len(features), "n_features": len(features)},
    }, args.out, s.gpu, n_params, peak)

    for method in methods:
        peft = _peft(base, method, s)
        rec.attempt(f"baseline train {method}", lambda: rec.row(
            "train", method, "baseline", None, baseline_train(peft, features, s, pad_id, device)))
        if not args.no_eval:
            rec.attempt(f"baseline eval {method}", lambda: rec.row(
                "eval", method, "baseline", None, baseline_eval(peft, prompts, answers, s, pad_id, device)))
        _release(peft)
    if s.gpu:
        base.set_attn_implementation("flex_attention")

    def emorec_side(method: str, compiled: bool, budgets: tuple[int, ...], evaluate: bool) -> None:
        system = "emorec+compile" if compiled else "emorec"
        peft = _peft(base, method, s)
        prefix = num_prefix_tokens(peft)
        cfgs = {b: _train_cfg(s, args.profile, budget=b, compiled=compiled, flex=is_flex(base)) for b in budgets}
        engine, _ = create_engine(PackedCausalLM(peft), cfgs[budgets[0]], dist)
        if not compiled or args.compiled_only:
            rec.attempt(f"isolation {method}", lambda: rec.add(
                "checks", {"method": method, **isolation_check(engine.module, features, pad_id, device)}))
        for budget in budgets:
            rec.attempt(f"{system} train {method} budget {budget}", lambda: rec.row(
                "train", method, system, budget, emorec_train(engine, features, s, cfgs[budget], pad_id, prefix,
                                                              device)))
        if args.profile:
            def profile() -> dict:
                step, order = packed_step(engine, features, cfgs[budgets[-1]], pad_id, prefix, device)
                first = order.epoch_start(s.rounds + 1)
                return {"system": system, "method": method, "budget": budgets[-1],
                        **profile_steps(step, first, args.profile, device)}

            rec.attempt(f"profile {system} {method}", lambda: rec.add("profiles", profile()))
        if evaluate:
            rec.attempt(f"{system} eval {method}", lambda: rec.row(
                "eval", method, system, max(budgets), emorec_eval(engine, prompts, answers, s, max(budgets), pad_id,
                                                                  device, fixed_rows=compiled)))
        _release(peft)

    def compiled(method: str) -> None:
        rec.attempt(f"compile {method}", lambda: compile_decoder_layers(base, True))
        rec.attempt(f"emorec+compile {method}",
                    lambda: emorec_side(method, True, s.budgets, not args.no_eval))
        compile_decoder_layers(base, False)
        _free()

    # Compiled LoRA, the headline figure, runs first, so that a run cut short by a time limit still has it.
    if s.compile and "lora" in methods:
        compiled("lora")
    for method in methods if not (s.compile and args.compiled_only) else []:
        eager_budgets = s.budgets[:1] if s.compile else s.budgets
        rec.attempt(f"emorec {method}", lambda: emorec_side(method, False, eager_budgets, not args.no_eval))
        _free()
    if s.compile and "ptuning" in methods:
        compiled("ptuning")
    rec.save()
    return rec.result


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("transformers", "peft", "deepspeed"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


_HEAD = (f"{'task':5} {'method':8} {'system':15} {'budget':>6} {'samples/s':>10} {'tokens/s':>10} "
         f"{'MFU meas':>9} {'MFU 989':>8} {'peak GB':>8} {'x base':>7}")


def format_head(result: dict) -> str:
    return (f"{result['device']}: {result['model']}, N={result['base_params']:,}, matmul peak "
            f"{result['matmul_peak_tflops']:.3g} TFLOP/s, {result['flops_per_token']}\n{_HEAD}")


def format_row(r: dict) -> str:
    mfu989 = f"{100 * r['mfu_989']:7.1f}%" if r["mfu_989"] is not None else f"{'-':>8}"
    ratio = f"{r['vs_baseline']:6.2f}x" if r["vs_baseline"] is not None else "-"
    budget = r["budget"] if r["budget"] is not None else "-"
    return (f"{r['task']:5} {r['method']:8} {r['system']:15} {budget:>6} {r['samples_per_s']:10.1f} "
            f"{r['tokens_per_s']:10.0f} {100 * r['mfu_measured']:8.2f}% {mfu989} {r['peak_mem_gb']:8.2f} {ratio:>7}")


def format_table(result: dict) -> str:
    lines = [format_head(result)] + [format_row(r) for r in result["rows"]]
    for c in result["checks"]:
        lines.append(f"isolation {c['method']}: {c['packed_attention']}; other samples move by {c['leak']:.1e} when one "
                     f"is replaced; vs each sample alone (SDPA) rel error {c['rel_error']:.2e}, noise floor (eager vs "
                     f"SDPA) {c['noise_floor']:.2e}, argmax agreement {100 * c['argmax_agreement']:.0f}%: "
                     f"{'ok' if c['ok'] else 'FAILED'}")
    for p in result["profiles"]:
        groups = ", ".join(f"{k} {v:.3f}s" for k, v in p["groups_s"].items())
        lines.append(f"profile {p['system']} {p['method']} ({p['steps']} steps): wall {p['wall_s']:.3f}s, busy "
                     f"{p['busy_s']:.3f}s ({100 * (p['busy_fraction'] or 0):.0f}%): {groups}")
    for e in result["errors"]:
        lines.append(f"ERROR in {e['where']}: {e['error'][:300]}")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    result = run_bench(args)
    print("\n" + format_table(result), flush=True)
    return 1 if result["errors"] or not all(c["ok"] for c in result["checks"]) else 0
