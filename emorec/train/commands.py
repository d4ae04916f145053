"""`emorec train` and `emorec export`."""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger("emorec")


def cmd_train(args) -> int:
    from emorec.config import load_config
    from emorec.train.recipe import StoppedEarly, run

    cfg = load_config(args.config, args.overrides)
    try:
        result = run(cfg, show_progress=not args.no_progress)
    except StoppedEarly as e:
        log.warning("%s", e)
        return 3
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: result[k] for k in ("name", "dataset", "method", "primary", "value", "steps")}))
    return 0


def register(sub) -> None:
    t = sub.add_parser("train", help="train, checkpoint, export and evaluate one (dataset, method) run",
                       description="Train one run. CONFIG is a YAML run config (see configs/runs/); each "
                                   "key=value override sets a dotted key, e.g. train.lr=1e-4 method.name=ptuning. "
                                   "Resumes from the newest complete checkpoint under `output` (resume=auto).")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    t.set_defaults(func=cmd_train)
    register_export(sub)


def register_export(sub) -> None:
    x = sub.add_parser(
        "export", help="write a finished run's adapter to a folder, as trained or in ChatGLM2/3's own layout",
        description="Copy RUN's adapter to OUT. --layout peft (default): the peft adapter emorec trained on the "
                    "native GLM model. --layout chatglm: for a run on ChatGLM2/3, the same adapter in ChatGLM's "
                    "layout, exactly equivalent: a peft LoRA on the fused query_key_value (rank 3r), or a THUDM "
                    "P-Tuning v2 checkpoint (transformer.prefix_encoder.embedding.weight in pytorch_model.bin, "
                    "config.json with pre_seq_len), loadable by THUDM's own code.")
    x.add_argument("run", help="the run's output URL (path, file://, s3://...)")
    x.add_argument("out", help="a new local folder")
    x.add_argument("--layout", choices=("peft", "chatglm"), default="peft")
    x.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from emorec.train.export import export_run

    method = export_run(args.run, args.out, args.layout)
    print(f"{args.run}: {method} adapter written to {args.out} ({args.layout} layout)")
    return 0
