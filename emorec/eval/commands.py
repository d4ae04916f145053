"""`emorec eval` and `emorec predict`: a trained adapter on a split, or on one input."""

from __future__ import annotations

import argparse
import json
import os

from emorec.errors import EmorecError


def cmd_eval(args) -> int:
    from emorec.data import load_dataset
    from emorec.dist import SINGLE
    from emorec.eval.evaluate import evaluate
    from emorec.eval.inference import load_predictor
    from emorec.io.storage import open_store

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
    from emorec.eval.inference import load_adapter_predictor

    if not args.dataset or not args.data_path:
        raise EmorecError("with --model (an adapter trained elsewhere), give --dataset and --data-path too: they "
                          "define the label set and the data")
    return load_adapter_predictor(args.run, args.model, args.dataset, args.data_path, args.overrides)


def cmd_predict(args) -> int:
    from emorec.eval.inference import example_from_dialogue, load_predictor

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
    from emorec.data import DuplicateKey, read_text, unique_object
    from emorec.errors import DataError

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


def register(sub) -> None:
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
