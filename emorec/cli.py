"""The `emorec` command line. Every subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .errors import EmorecError

log = logging.getLogger("emorec")

EXAMPLES = """\
examples:
  emorec data fixtures fixtures/                     # small synthetic copies of all six releases
  emorec data inspect --dataset meld --path data/MELD.Raw --json
  emorec train configs/runs/meld_lora.yaml data.path=data/MELD.Raw output=s3://bucket/runs/meld_lora
  torchrun --nproc_per_node 2 -m emorec.cli train configs/runs/meld_lora.yaml
  emorec eval runs/meld_lora --split test
  emorec predict runs/meld_lora --text "I can't believe you did that!"
  emorec sweep configs/sweeps/paper.yaml output=s3://bucket/emorec/paper   # 6 x 2 jobs on a Ray cluster
  emorec quickstart                                  # 6 datasets x 2 methods on a tiny model, on CPU
  emorec convert THUDM/chatglm2-6b models/chatglm2-6b  # ChatGLM2/3 -> a standard transformers GLM checkpoint
"""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import warnings

    for message in ("`past_key_values` is deprecated", ".*is deprecated. Please use `torch.distributed",
                    "`is_gradient_checkpointing` is deprecated"):
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    for noisy in ( "torch.distributed", "datasets", "urllib3", "botocore", "s3fs", "aiobotocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_train(args) -> int:
    from .config import load_config
    from .train import StoppedEarly, run

    cfg = load_config(args.config, args.overrides)
    try:
        result = run(cfg, show_progress=not args.no_progress)
    except StoppedEarly as e:
        log.warning("%s", e)
        return 3
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: result[k] for k in ("name", "dataset", "method", "primary", "value", "steps")}))
    return 0


def cmd_eval(args) -> int:
    from .data import load_dataset
    from .evaluate import evaluate
    from .engine import SINGLE
    from .inference import load_predictor
    from .storage import open_store

    _no_overrides_without_model(args)
    if args.model:
        p, ds = _adapter_predictor(args)
        cfg = p.cfg
    else:
        p = load_predictor(args.run)
        cfg = p.cfg
        path = args.data_path or cfg.data.path
        ds = load_dataset(cfg.data.dataset, path, on_bad_row=cfg.data.on_bad_row, seed=cfg.seed,
                          options=cfg.data.options)
    split = args.split or cfg.eval.split
    if split not in ds.splits:
        raise EmorecError(f"{cfg.data.dataset} at {cfg.data.path}: no {split!r} split (has {', '.join(ds.splits)})")
    examples = ds.splits[split][: args.limit]
    metrics, _ = evaluate(p.model, p.spec, examples, p.tokenizer, cfg, SINGLE, p.device)
    metrics.update(split=split, dataset=p.spec.name, method=cfg.method.name)
    if not args.model:
        open_store(args.run).write_json(f"eval-{split}.json", metrics)
    print(json.dumps({k: metrics[k] for k in ("dataset", "method", "split", "n", "primary", "value", "values")}, indent=2))
    return 0


def _no_overrides_without_model(args) -> None:
    if args.overrides and not args.model:
        raise EmorecError(f"{' '.join(args.overrides)}: key=value settings apply only with --model (an adapter "
                          "trained elsewhere); a run uses the config it was trained with")


def _adapter_predictor(args):
    from .inference import load_adapter_predictor

    if not args.dataset or not args.data_path:
        raise EmorecError("with --model (an adapter trained elsewhere), give --dataset and --data-path too: they "
                          "define the label set and the data")
    return load_adapter_predictor(args.run, args.model, args.dataset, args.data_path, args.overrides)


def cmd_predict(args) -> int:
    from .inference import example_from_dialogue, load_predictor

    if args.dialogue:
        turns = _read_dialogue(args.dialogue)
    elif args.text:
        turns = [{"speaker": args.speaker, "text": args.text}]
    else:
        raise EmorecError("give --text SENTENCE or --dialogue FILE.json")
    _no_overrides_without_model(args)
    p = _adapter_predictor(args)[0] if args.model else load_predictor(args.run)
    result = p.predict([example_from_dialogue(turns)])[0]
    print(json.dumps({"label": result["labels"][0] if not p.spec.multi_label else result["labels"], **result}, indent=2))
    return 0


def _read_dialogue(path: str) -> list:
    """predict --dialogue FILE: a JSON list of turns; every defect is a one-line error naming the file."""
    from .data import DuplicateKey, read_text, unique_object
    from .errors import DataError

    if not os.path.isfile(path):
        raise DataError("not found (expected the --dialogue JSON file: a list of {\"speaker\": ..., \"text\": ...} "
                        "turns)", file=path)
    text = read_text(path)
    try:
        turns = json.loads(text, object_pairs_hook=unique_object)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg} at column {e.colno} (expected a JSON list of "
                        '{"speaker": ..., "text": ...} turns)', file=path, line=e.lineno) from None
    except DuplicateKey as e:
        raise DataError(f"key {e.key!r} appears twice in one turn (expected each key once)", file=path) from None
    expected = 'expected a JSON list of {"speaker": ..., "text": ...} turns, the last one to be labelled'
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{'an empty list' if turns == [] else 'not a list'}; {expected}", file=path)
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict) or not isinstance(turn.get("text"), str) or not turn["text"].strip():
            raise DataError(f"turn {i} has no non-empty string \"text\"; {expected}", file=path)
        unknown = sorted(set(turn) - {"speaker", "text"})
        if unknown:
            raise DataError(f"turn {i} has unknown key(s) {', '.join(map(repr, unknown))}; {expected}", file=path)
        speaker = turn.get("speaker")
        if speaker is not None and not isinstance(speaker, str):
            raise DataError(f"turn {i}: \"speaker\" is {speaker!r}, expected a string or null", file=path)
    return turns


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number (expected a positive integer)") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer (expected N >= 1 examples)")
    return n


def cmd_inspect(args) -> int:
    from .data import load_dataset
    from .data.inspect import counts, table

    options = {}
    for item in args.option or []:
        from .config import parse_override

        key, value = parse_override(item)
        if ".".join(key) in options:
            raise EmorecError(f"--option {'.'.join(key)} is given twice")
        options[".".join(key)] = value
    ds = load_dataset(args.dataset, args.path, on_bad_row=args.on_bad_row, options=options)
    c = counts(ds)
    print(json.dumps(c, indent=2) if args.json else table(c))
    return 0


def cmd_fixtures(args) -> int:
    from .fixtures import make_all

    for name, path in make_all(args.out, seed=args.seed, overwrite=args.overwrite).items():
        print(f"{name:12s} {path}")
    return 0


def cmd_config(args) -> int:
    from .config import dump, load_config

    print(dump(load_config(args.config, args.overrides)))
    return 0


def cmd_sweep(args) -> int:
    from .sweep import run_sweep
    from .sweep_config import load_sweep

    rows = run_sweep(load_sweep(args.config, args.overrides))
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


def cmd_quickstart(args) -> int:
    from .quickstart import quickstart

    return quickstart(args.out, overrides=args.overrides)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emorec",
        description="Adapt ChatGLM-family LLMs (GLM-4, ChatGLM2/3) into emotion recognisers with LoRA or "
                    "P-Tuning v2 under DeepSpeed, on six emotion benchmarks or your own data.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train, checkpoint, export and evaluate one (dataset, method) run",
                       description="Train one run. CONFIG is a YAML run config (see configs/runs/); each "
                                   "key=value override sets a dotted key, e.g. train.lr=1e-4 method.name=ptuning. "
                                   "Resumes from the newest complete checkpoint under `output` (resume=auto).")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    t.set_defaults(func=cmd_train)

    adapter_help = ("with --model: RUN is an adapter folder trained elsewhere (peft on the native model, or "
                    "ChatGLM2/3's own layouts: a peft LoRA on query_key_value, or a THUDM P-Tuning v2 checkpoint)")
    e = sub.add_parser("eval", help="evaluate a finished run's exported adapter on a split",
                       description="Evaluate RUN's adapter on a split with the dataset's metric. " + adapter_help +
                                   ", e.g. emorec eval ptuning-out/checkpoint-3000 --model THUDM/chatglm2-6b "
                                   "--dataset meld --data-path data/MELD.Raw")
    e.add_argument("run", help="the run's output URL (path, file://, s3://...), or an adapter folder with --model")
    e.add_argument("--model", help="base model of an adapter trained elsewhere (ChatGLM2/3 folder or hub id, GLM)")
    e.add_argument("--dataset", help="with --model: iemocap, meld, emorynlp, dailydialog, carer, goemotions, custom")
    e.add_argument("overrides", nargs="*", metavar="key=value",
                   help="with --model: run-config keys for the prompt and data, e.g. prompt.history=1")
    e.add_argument("--split", choices=("train", "validation", "test"))
    e.add_argument("--data-path", help="dataset directory, if not where the run was trained")
    e.add_argument("--limit", type=_positive_int, default=None,
                   help="evaluate the first N examples only (N >= 1)")
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="label a sentence or a dialogue's last turn with a trained adapter",
                        description="Label one input with RUN's adapter. " + adapter_help + ".")
    pr.add_argument("run", help="the run's output URL, or an adapter folder with --model")
    pr.add_argument("--model", help="base model of an adapter trained elsewhere")
    pr.add_argument("--dataset", help="with --model: the dataset whose label set to use")
    pr.add_argument("--data-path", help="with --model: that dataset's directory")
    pr.add_argument("overrides", nargs="*", metavar="key=value", help="with --model: run-config keys, e.g. "
                    "prompt.history=1")
    pr.add_argument("--text", help="the utterance to classify")
    pr.add_argument("--speaker", help="who says it (dialogue datasets)")
    pr.add_argument("--dialogue", help='JSON file: [{"speaker": "A", "text": "..."}, ...]; the last turn is labelled')
    pr.set_defaults(func=cmd_predict)

    d = sub.add_parser("data", help="look at datasets: inspect release files, write fixtures")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    i = dsub.add_parser("inspect", help="count utterances per split and label, and what was skipped")
    i.add_argument("--dataset", required=True, help="iemocap, meld, emorynlp, dailydialog, carer, goemotions, custom")
    i.add_argument("--path", required=True, help="directory of the native release files")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--on-bad-row", choices=("error", "skip"), default="error")
    i.add_argument("--option", action="append", metavar="key=value", help="loader option (repeatable)")
    i.set_defaults(func=cmd_inspect)
    f = dsub.add_parser("fixtures", help="write small synthetic files in every dataset's native format")
    f.add_argument("out")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--overwrite", action="store_true",
                   help="replace files already there (without it, a DIR holding any of the files is refused)")
    f.set_defaults(func=cmd_fixtures)

    c = sub.add_parser("config", help="print a run config with defaults and overrides applied")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.set_defaults(func=cmd_config)

    sw = sub.add_parser("sweep", help="run many jobs (datasets x methods x grid) in parallel on a Ray cluster",
                        description="Run a sweep config (see configs/quickstart.yaml, configs/sweeps/). Joins the "
                                    "cluster at RAY_ADDRESS, or starts a local one on 127.0.0.1. Each job is a Ray "
                                    "Train run of ray.workers DeepSpeed workers; overrides set sweep keys, e.g. "
                                    "max_concurrent=4 set.train.max_steps=100 datasets=[meld,iemocap].")
    sw.add_argument("config")
    sw.add_argument("overrides", nargs="*", metavar="key=value")
    sw.set_defaults(func=cmd_sweep)

    from . import bench, bench_cluster, convert, export, report, slurm, submit

    submit.register(sub)
    report.register(sub)
    slurm.register(sub)
    bench.register(sub)
    bench_cluster.register(sub)
    convert.register(sub)
    export.register(sub)

    q = sub.add_parser("quickstart", help="train all six datasets x both methods on the tiny model and print a table")
    q.add_argument("--out", default="runs/quickstart", help="where fixtures, runs and the table go")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="sweep keys, e.g. set.train.max_steps=50")
    q.set_defaults(func=cmd_quickstart)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (train CONFIG --no-progress a.b=1); argparse stops at the option.
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except EmorecError as e:
        print(f"emorec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
